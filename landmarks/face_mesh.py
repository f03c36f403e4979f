"""MediaPipe Face Mesh with attention (478 points), our runner: the ``face_landmark_front_cpu`` graph, static images.

Per frame (MediaPipe's graphs ``face_landmark_front_cpu``,
``face_detection_front_detection_to_roi``, ``face_landmark_cpu`` and
``tensors_to_face_landmarks_with_attention``, in static-image mode):

1. The short-range detector (:mod:`landmarks.face_detection`) finds faces;
   the best ``max_faces`` are kept.
2. Each detection becomes a turned square ROI: centred on its box, turned so
   that the line from the subject's right eye keypoint to the left one is
   level, side = 1.5 x the box's longer side (pixels).
3. ROIs overlapping an *earlier* ROI by IoU > 0.5 (axis-aligned, normalised
   frame coordinates) replace it (MediaPipe's AssociationNormRectCalculator).
4. Each ROI is warped to the 192 x 192 model input (values [0, 1], edge
   pixels replicated outside the frame) and the attention mesh model runs
   (:class:`landmarks.tflite_model.TFLiteModel`, its custom operators in
   :mod:`landmarks.mediapipe_ops`).
5. Face presence = sigmoid of the face-flag output; a face scoring 0.5 or
   less is dropped.
6. Refinement: the 468 mesh points (x, y, z) are overwritten, x and y only,
   by the model's lips (80), eyes (71 each) outputs; the irises (5 + 5) are
   appended and get as depth the mean depth of their eye's 16 eyelid points
   (``landmarks/data/facemesh_refinement.json``).
7. The points go from the 192 x 192 tensor (normalised by 192, depth too)
   back to the frame through the ROI: turned about its centre, scaled by its
   width/height; depth scaled by the ROI's normalised width.

Output frame, as ``mediapipe.solutions.face_mesh``: ``x = u / W``, ``y = v /
H`` (u right, v down, pixel ``[row, col]`` covering ``[col, col+1) x
[row, row+1)``), ``z`` in units of the frame width, smaller = closer.
"""
from __future__ import annotations

import numpy as np

from .cache_dir import default_cache_dir
from .face_detection import SHORT_RANGE, Detections, FaceDetector
from .mediapipe_ops import CUSTOM_OPS
from .model_files import read_data_file, read_json
from .roi_crop import crop_to_tensor
from .tflite_model import TFLiteModel

__all__ = ["FaceMeshRunner", "detection_rois", "refine_landmarks", "MESH_MODEL_FILE"]

MESH_MODEL_FILE = "face_landmark_with_attention.tflite"
MESH_INPUT = 192
ROI_SCALE = 1.5            # face_detection_front_detection_to_roi: scale_x = scale_y = 1.5, square_long
SAME_ROI_IOU = 0.5         # face_landmark_front_cpu: AssociationNormRectCalculator min_similarity_threshold
PRESENCE_THRESHOLD = 0.5   # face_landmark_cpu: ThresholdingCalculator (min_tracking_confidence default)


def _normalize_radians(a: np.ndarray) -> np.ndarray:
    """Angle(s) into [-pi, pi)."""
    return a - 2 * np.pi * np.floor((a + np.pi) / (2 * np.pi))


def detection_rois(det: Detections, width: int, height: int) -> np.ndarray:
    """``(K, 5)`` float32 ROIs ``(x_center, y_center, width, height, rotation)`` of detections.

    Centre and size normalised to the frame (``width x height`` pixels);
    rotation in radians, positive = clockwise on screen, such that the
    subject's right eye keypoint (0) -> left eye keypoint (1) is level in the
    ROI. The ROI is square in pixels: ``ROI_SCALE`` x the box's longer side.
    """
    b = det.boxes.astype(np.float32)
    xc, yc = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
    k0, k1 = det.keypoints[:, 0] * [width, height], det.keypoints[:, 1] * [width, height]
    rotation = _normalize_radians(-np.arctan2(-(k1[:, 1] - k0[:, 1]), k1[:, 0] - k0[:, 0]))
    long_side = np.maximum((b[:, 2] - b[:, 0]) * width, (b[:, 3] - b[:, 1]) * height)
    return np.stack([xc, yc, ROI_SCALE * long_side / width, ROI_SCALE * long_side / height,
                     rotation], axis=1).astype(np.float32)


def _drop_overlapping(rois: np.ndarray) -> np.ndarray:
    """MediaPipe's association of ROIs: each ROI in turn removes the kept ones it overlaps by IoU > 0.5
    (axis-aligned boxes in normalised coordinates, rotation ignored) and goes to the end of the list."""
    kept: list[np.ndarray] = []
    for r in rois:
        lo, hi = r[:2] - r[2:4] / 2, r[:2] + r[2:4] / 2

        def iou(o):
            olo, ohi = o[:2] - o[2:4] / 2, o[:2] + o[2:4] / 2
            inter = np.prod(np.clip(np.minimum(hi, ohi) - np.maximum(lo, olo), 0, None))
            union = np.prod(hi - lo) + np.prod(ohi - olo) - inter
            return inter / union if union > 0 else 0.0

        kept = [o for o in kept if iou(o) <= SAME_ROI_IOU] + [r]
    return np.array(kept, np.float32).reshape(-1, 5)


def refine_landmarks(outputs: list[np.ndarray], table: dict) -> np.ndarray:
    """The attention model's outputs -> ``(478, 3)`` float32 points in input-tensor pixels (x, y, z).

    Args:
        outputs: the model's outputs in its order: mesh ``(468*3)``, lips
            ``(80*2)``, left eye ``(71*2)``, right eye ``(71*2)``, left iris
            ``(5*2)``, right iris ``(5*2)`` (MediaPipe's left = image left =
            the subject's right), face flag.
        table: ``facemesh_refinement.json``.
    """
    pts = np.zeros((478, 3), np.float32)
    pts[:468] = outputs[0].reshape(468, 3)
    for out, key in zip(outputs[1:6], ("lips", "left_eye", "right_eye", "left_iris", "right_iris")):
        pts[table[key], :2] = out.reshape(-1, 2)
    for iris, depth_from in (("left_iris", "left_iris_depth_from"), ("right_iris", "right_iris_depth_from")):
        # MediaPipe sums in double, then stores float
        pts[table[iris], 2] = np.float32(pts[table[depth_from], 2].astype(np.float64).mean())
    return pts


def _to_frame(pts: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Tensor-pixel points ``(478, 3)`` -> frame-normalised ``(x, y, z)`` through ``roi`` (see module doc)."""
    xc, yc, w, h, rot = (float(v) for v in roi)
    n = pts / np.float32(MESH_INPUT) - np.array([0.5, 0.5, 0.0], np.float32)
    c, s = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    x = (c * n[:, 0] - s * n[:, 1]) * np.float32(w) + np.float32(xc)
    y = (s * n[:, 0] + c * n[:, 1]) * np.float32(h) + np.float32(yc)
    return np.stack([x, y, n[:, 2] * np.float32(w)], axis=1).astype(np.float32)


class FaceMeshRunner:
    """MediaPipe Face Mesh (``refine_landmarks=True``, static images) on ``ai_edge_litert``.

    Args:
        max_faces: most faces per frame (>= 1).
        min_detection_confidence: the short-range detector's score threshold, (0, 1].
        num_threads: TFLite interpreter threads (None: the runtime's default).

    Raises:
        ModelFileError: a model file of ``landmarks/data`` is missing or damaged.
    """

    def __init__(self, max_faces: int = 1, min_detection_confidence: float = 0.5, num_threads: int | None = None):
        self.max_faces = int(max_faces)
        self.detector = FaceDetector(SHORT_RANGE, min_detection_confidence, num_threads=num_threads)
        self._mesh = TFLiteModel(read_data_file(MESH_MODEL_FILE), CUSTOM_OPS, num_threads=num_threads,
                                 cache_dir=default_cache_dir())
        self._table = read_json("facemesh_refinement.json")

    def process(self, frame: np.ndarray, max_faces: int | None = None) -> list[np.ndarray]:
        """Face meshes in ``frame`` (``(H, W, 3)`` uint8 RGB): a list of ``(478, 3)`` float32 ``(x, y, z)``,
        normalised as ``mediapipe.solutions.face_mesh`` gives them (module docstring). ``max_faces``
        overrides the constructor's for this call (one runner serves both of the detector's passes)."""
        h, w = frame.shape[:2]
        k = self.max_faces if max_faces is None else int(max_faces)
        det = self.detector(frame)
        det = Detections(det.boxes[:k], det.keypoints[:k], det.scores[:k])
        faces = []
        for roi in _drop_overlapping(detection_rois(det, w, h)):
            rect = (roi[0] * w, roi[1] * h, roi[2] * w, roi[3] * h)
            tensor = crop_to_tensor(frame, rect, float(roi[4]), MESH_INPUT, (0.0, 1.0), "replicate")
            outputs = self._mesh.run(tensor)
            presence = 1.0 / (1.0 + np.exp(-float(outputs[6].reshape(-1)[0])))
            if presence > PRESENCE_THRESHOLD:
                faces.append(_to_frame(refine_landmarks(outputs, self._table), roi))
        return faces
