"""Image -> detections: each face cut to a square working crop, stacked as (B, ...) tensors for the stages.

All stages work on the crop (a fixed working resolution, so faces from photos
of any size batch together). The crop is a scale-and-shift of the photo:
``u_photo = u_crop / scale + x0`` (same for v), and its intrinsics follow
from the photo's by :func:`fitting.camera.crop_intrinsics` (the photo's default
is a pinhole with :data:`fitting.camera.DEFAULT_FOV` on the longer side).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from landmarks import REGION_NAMES, FaceLandmarks, region_label_map
from landmarks.indices import point_groups

from .camera import DEFAULT_FOV, crop_intrinsics, photo_intrinsics

CROP_MARGIN = 1.6  # crop side / landmark bounding-box side


@dataclass
class FaceCrop:
    """One face at working resolution.

    ``image`` (S, S, 3) float32 [0, 1]; ``points`` (478, 3) u, v in crop
    pixels and MediaPipe's relative depth z in crop pixels (smaller =
    closer); ``intrinsics`` (4,) for the crop; ``x0, y0, scale`` map crop to
    photo pixels; ``region_labels`` (S, S) uint8 (landmarks.REGION_NAMES),
    background wherever the crop runs past the photo's edge; ``inside``
    (S, S) bool, the crop pixels that lie wholly inside the photo (the rest
    of ``image`` repeats the photo's edge and is no evidence of anything); ``mediapipe``: False for a
    face MediaPipe's mesh missed and the regressor read alone, whose ``points`` are stand-ins
    (:mod:`fitting.regressor_faces`) that no stage may fit.
    """

    name: str
    image: np.ndarray
    points: np.ndarray
    intrinsics: np.ndarray
    x0: float
    y0: float
    scale: float
    photo_size: tuple
    photo_intrinsics: np.ndarray
    region_labels: np.ndarray
    landmarks: FaceLandmarks
    inside: np.ndarray
    mediapipe: bool = True

    @property
    def box(self) -> np.ndarray:
        """(3,) ``x0, y0, scale``: the crop as a camera operation (:meth:`fitting.camera.Camera.crop`)."""
        return np.array([self.x0, self.y0, self.scale], np.float64)


@dataclass
class FaceJob:
    """One detected face to fit: its crop, its (unique) name, the photo it came from (``source``:
    the path, None for arrays; ``index``: the photo's position in the input) and the seconds spent
    finding it."""

    name: str
    crop: FaceCrop
    source: Optional[str] = None
    index: int = 0
    detection_seconds: float = 0.0  # reading the photo and finding its faces, shared by its faces


def crop_face(image: np.ndarray, face: FaceLandmarks, size: int = 512, name: str = "",
              fov_deg: float = DEFAULT_FOV, mediapipe: bool = True) -> FaceCrop:
    """Cut a square crop of side ``size`` around ``face`` (border pixels replicated). ``mediapipe``: whether
    ``face`` holds MediaPipe's points (False: stand-ins of :func:`fitting.regressor_faces.regressor_face`)."""
    h, w = image.shape[:2]
    pts = face.points
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    centre = 0.5 * (lo + hi)
    side = CROP_MARGIN * float(max(hi - lo))
    scale = size / side
    x0, y0 = centre[0] - side / 2.0, centre[1] - side / 2.0
    # Continuous pixel frame: crop u = (u_photo - x0) * scale. cv2 maps pixel
    # centres (integer coords in its frame = +0.5 in ours), which cancels.
    m = np.array([[scale, 0.0, -x0 * scale + 0.5 * scale - 0.5],
                  [0.0, scale, -y0 * scale + 0.5 * scale - 0.5]], np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    k_photo = photo_intrinsics(h, w, fov_deg)
    k = crop_intrinsics(k_photo, np.array([x0, y0, scale]))
    cpts = pts.copy()
    cpts[:, 0] = (pts[:, 0] - x0) * scale
    cpts[:, 1] = (pts[:, 1] - y0) * scale
    cpts[:, 2] = pts[:, 2] * scale
    crop_face_lm = FaceLandmarks(points=cpts.astype(np.float32), bbox=(0.0, 0.0, float(size), float(size)),
                                 image_size=(size, size), refined=face.refined)
    # A face at the photo's edge: the crop past it repeats the edge's pixels, which the photometric
    # stages would fit (the fine stage carved the streaks into a cut-off chin). Those pixels are
    # labelled background, so every stage's face mask leaves them out.
    inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0.999
    labels = region_label_map(crop_face_lm, size, size)
    labels[~inside] = REGION_NAMES.index("background")
    return FaceCrop(name=name, image=np.clip(crop, 0, 1).astype(np.float32), points=cpts.astype(np.float32),
                    intrinsics=k.astype(np.float32), x0=float(x0), y0=float(y0), scale=float(scale),
                    photo_size=(h, w), photo_intrinsics=k_photo.astype(np.float32), region_labels=labels,
                    landmarks=face, inside=inside, mediapipe=bool(mediapipe))


@dataclass
class DetectionBatch:
    """Stacked crops for a stage: ``images`` (B, S, S, 3), ``uv`` (B, 478, 2), ``rel_depth`` (B, 478),
    ``intrinsics`` (B, 4) of the crops, ``region_labels`` (B, S, S) int64, ``groups`` (478,) landmark
    group ids, ``mediapipe_weight`` (B,) float: 1 where ``uv`` are MediaPipe's points, 0 where they are
    stand-ins for a face the regressor read alone (``FaceCrop.mediapipe``; the coarse stage's fusion
    multiplies MediaPipe's trust by it, and the medium stage follows that trust)."""

    crops: List[FaceCrop]
    images: torch.Tensor
    uv: torch.Tensor
    rel_depth: torch.Tensor
    intrinsics: torch.Tensor
    region_labels: torch.Tensor
    groups: torch.Tensor
    mediapipe_weight: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.mediapipe_weight is None:
            self.mediapipe_weight = torch.ones(len(self.crops), dtype=torch.float32, device=self.uv.device)

    @property
    def mediapipe_found(self) -> bool:
        """Whether every face's ``uv`` are MediaPipe's own points."""
        return bool((self.mediapipe_weight > 0).all())

    @classmethod
    def stack(cls, crops: Sequence[FaceCrop], device: Optional[torch.device] = None) -> "DetectionBatch":
        t = lambda a, dt=torch.float32: torch.as_tensor(np.stack(a), dtype=dt, device=device)  # noqa: E731
        return cls(crops=list(crops), images=t([c.image for c in crops]), uv=t([c.points[:, :2] for c in crops]),
                   rel_depth=t([c.points[:, 2] for c in crops]), intrinsics=t([c.intrinsics for c in crops]),
                   region_labels=t([c.region_labels for c in crops], torch.int64),
                   groups=torch.as_tensor(point_groups(), dtype=torch.int64, device=device),
                   mediapipe_weight=torch.tensor([float(getattr(c, "mediapipe", True)) for c in crops],
                                                 dtype=torch.float32, device=device))

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: slice) -> "DetectionBatch":
        """The faces ``index`` (a slice) as a batch; its tensors are views of this one's."""
        if not isinstance(index, slice):
            raise TypeError(f"a DetectionBatch is sliced, not indexed by {type(index).__name__}")
        return DetectionBatch(crops=self.crops[index], images=self.images[index], uv=self.uv[index],
                              rel_depth=self.rel_depth[index], intrinsics=self.intrinsics[index],
                              region_labels=self.region_labels[index], groups=self.groups,
                              mediapipe_weight=self.mediapipe_weight[index])
