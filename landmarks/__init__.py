"""Image -> face landmarks (MediaPipe Face Mesh, 478 points) and semantic region masks. Knows no 3D model.

MediaPipe's face models ship in ``landmarks/data`` and run on ``ai_edge_litert`` (:mod:`landmarks.face_mesh`);
``mediapipe`` itself is an optional cross-check (``FaceMeshDetector(backend="mediapipe")``).

Main entry points::

    from landmarks import FaceMeshDetector, load_image, region_masks
    img = load_image("photo.jpg")                # (H, W, 3) float32 RGB in [0, 1], EXIF applied
    with FaceMeshDetector() as det:
        face = det.detect_one(img)               # FaceLandmarks: points (478, 3) = (u, v, z) pixels
    masks = region_masks(face)                   # {"skin", "brows", "eyes", "nose", "lips", "mouth_interior"}

Optional, non-commercial (Basel Face Model bases): 3DDFA_V2's regressor, pose and 68 3D points::

    from landmarks.regressor import FaceRegressor
    faces = FaceRegressor()(pixels, boxes)       # RegressedFaces: points (N, 68, 3), rotation (N, 3, 3)
"""
from .detector import FaceLandmarks, FaceMeshDetector
from .errors import FaceIndexError, ImageLoadError, LandmarksError, ModelFileError, NoFaceError
from .image import LoadedImage, load_image, to_uint8
from .regions import REGION_NAMES, SKIN_REGIONS, in_regions, region_label_map, region_label_maps_torch, region_masks

__all__ = [
    "FaceLandmarks", "FaceMeshDetector",
    "FaceIndexError", "ImageLoadError", "LandmarksError", "ModelFileError", "NoFaceError",
    "LoadedImage", "load_image", "to_uint8",
    "REGION_NAMES", "SKIN_REGIONS", "in_regions", "region_label_map", "region_label_maps_torch", "region_masks",
]
