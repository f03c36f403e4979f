"""MediaPipe's BlazeFace face detectors (short- and full-range), run on ``ai_edge_litert``, our own post-processing.

What MediaPipe's ``face_detection_{short,full}_range`` graphs do, and this
module does the same way:

1. The whole frame, its aspect kept (zero-padded to a square around its
   centre), becomes the model's input: 128 x 128 (short range) or 192 x 192
   (full range), values in [-1, 1] (:mod:`landmarks.roi_crop`).
2. The model scores a fixed set of SSD anchors (896 or 2304 cell centres,
   :func:`ssd_anchors`) and regresses per anchor a box and six keypoints
   (subject's right eye, left eye, nose tip, mouth centre, right and left
   ear tragion) as offsets from the anchor, in tensor pixels.
3. Scores pass a sigmoid (raw values clipped to +-100 first); anchors under
   the score threshold, or with a negative / NaN box size, are dropped.
4. Weighted non-maximum suppression (:func:`weighted_nms`): the best box and
   every box overlapping it by IoU > 0.3 become one detection, their
   score-weighted mean box and keypoints, with the best box's score.
5. The detections are mapped from the padded square back to the frame.

Frames of the results: normalised to the frame, x = u / W, y = v / H
(u right, v down, pixel ``[row, col]`` covering ``[col, col+1) x [row, row+1)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model_files import read_data_file
from .roi_crop import crop_to_tensor, letterbox_rect
from .tflite_model import TFLiteModel

__all__ = ["DetectorSpec", "SHORT_RANGE", "FULL_RANGE", "Detections", "FaceDetector", "ssd_anchors",
           "decode_boxes", "weighted_nms"]


@dataclass(frozen=True)
class DetectorSpec:
    """One detector model and its graph options (MediaPipe's face_detection_*_range.pbtxt)."""

    model_file: str
    input_size: int                    # square tensor side, pixels
    strides: tuple[int, ...]           # one per anchor layer; equal neighbours share a grid
    interpolated_aspect_ratio: float   # > 0: one more anchor per layer at each cell
    num_boxes: int
    min_score: float                   # the graph's default score threshold


SHORT_RANGE = DetectorSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 896, 0.5)
"""Faces within about 2 m of the camera, i.e. filling a good part of the frame."""
FULL_RANGE = DetectorSpec("face_detection_full_range_sparse.tflite", 192, (4,), 0.0, 2304, 0.6)
"""Faces up to about 5 m away: small faces in a large frame."""

# Shared by both graphs (face_detection.pbtxt): score clipping, NMS overlap.
SCORE_CLIP = 100.0
NMS_MIN_IOU = 0.3
NUM_KEYPOINTS = 6


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """``(num_boxes, 2)`` float32 anchor centres ``(x, y)``, normalised to the input tensor.

    MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size`` (every anchor
    1 x 1, so only centres matter): consecutive layers of the same stride
    share one grid of ``ceil(size / stride)`` cells and each contributes one
    anchor per cell per aspect ratio (here one, 1.0), plus one for the
    interpolated scale when that ratio is > 0; anchors of a cell are
    consecutive, cells in row-major order.
    """
    out = []
    k = 0
    strides = spec.strides
    while k < len(strides):
        same = 1
        while k + same < len(strides) and strides[k + same] == strides[k]:
            same += 1
        per_cell = same * (1 + (spec.interpolated_aspect_ratio > 0))
        cells = int(np.ceil(spec.input_size / strides[k]))
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        k += same
    anchors = np.concatenate(out).astype(np.float32)
    if len(anchors) != spec.num_boxes:
        raise ValueError(f"{spec.model_file}: {len(anchors)} anchors, the model has {spec.num_boxes} boxes")
    return anchors


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Regressor output -> boxes and keypoints, normalised to the input tensor.

    Args:
        raw: ``(N, 16)``: per anchor ``x, y, w, h`` of the box centre/size then
            ``x, y`` of each of the 6 keypoints, tensor pixels, centres relative
            to the anchor (the model's "reverse output order", x before y).
        anchors: ``(N, 2)`` from :func:`ssd_anchors`.
        scale: tensor side in pixels (x/y/w/h scale of the graph).

    Returns:
        ``boxes (N, 4)`` as ``(xmin, ymin, xmax, ymax)`` and ``keypoints (N, 6, 2)`` as ``(x, y)``.
    """
    raw = raw.astype(np.float32)
    centre = raw[:, 0:2] / scale + anchors
    half = 0.5 * raw[:, 2:4] / scale
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) / scale + anchors[:, None, :]
    return boxes, keypoints


def _iou_with(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of ``boxes (M, 4)`` with ``box (4,)``, all ``(xmin, ymin, xmax, ymax)``; 0 for empty unions."""
    iw = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = iw * ih
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 min_iou: float = NMS_MIN_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Best score first: that box and every remaining one overlapping it by IoU
    > ``min_iou`` (the best box included) form a cluster; the detection is
    the cluster's score-weighted mean box and keypoints with the best box's
    score; the cluster leaves the pool. Repeats until the pool is empty. The
    loop runs once per *output* detection; each pass is vectorised.

    Returns:
        ``(boxes (K, 4), keypoints (K, 6, 2), scores (K,))``, best first.
    """
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while order.size:
        top = order[0]
        iou = _iou_with(boxes[order], boxes[top])
        members = order[iou > min_iou]
        if members.size == 0:    # a zero-area best box overlaps nothing, not even itself: kept as it is
            out_b.append(boxes[top]), out_k.append(keypoints[top]), out_s.append(scores[top])
            break
        w = scores[members].astype(np.float32)
        total = w.sum()
        out_b.append((boxes[members] * w[:, None]).sum(axis=0) / total)
        out_k.append((keypoints[members] * w[:, None, None]).sum(axis=0) / total)
        out_s.append(scores[top])
        order = order[iou <= min_iou]
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros(0, np.float32)
    return (np.asarray(out_b, np.float32), np.asarray(out_k, np.float32), np.asarray(out_s, np.float32))


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, best score first, normalised frame coordinates (module docstring).

    Attributes:
        boxes: ``(K, 4)`` float32 ``(xmin, ymin, xmax, ymax)``.
        keypoints: ``(K, 6, 2)`` float32 ``(x, y)``: subject's right eye, left
            eye, nose tip, mouth centre, right ear tragion, left ear tragion.
        scores: ``(K,)`` float32 in (0, 1).
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class FaceDetector:
    """A BlazeFace detector on whole frames.

    Args:
        spec: :data:`SHORT_RANGE` or :data:`FULL_RANGE`.
        min_score: score threshold in (0, 1] (MediaPipe's ``min_detection_confidence``).
        num_threads: TFLite interpreter threads (None: the runtime's default).

    Raises:
        ModelFileError: the model file is missing or damaged.
    """

    def __init__(self, spec: DetectorSpec, min_score: float | None = None, num_threads: int | None = None):
        self.spec = spec
        self.min_score = spec.min_score if min_score is None else float(min_score)
        self._anchors = ssd_anchors(spec)
        self._model = TFLiteModel(read_data_file(spec.model_file), num_threads=num_threads)
        shapes = self._model.output_shapes
        # The regressor (N, 16) and classifier (N, 1) outputs, told apart by their width.
        self._box_out = next(i for i, s in enumerate(shapes) if s[-1] == 4 + 2 * NUM_KEYPOINTS)
        self._score_out = next(i for i, s in enumerate(shapes) if s[-1] == 1)

    def __call__(self, frame: np.ndarray) -> Detections:
        """Faces in ``frame`` (``(H, W, 3)`` uint8 RGB)."""
        h, w = frame.shape[:2]
        cx, cy, side, _ = letterbox_rect(w, h)
        n = self.spec.input_size
        tensor = crop_to_tensor(frame, (cx, cy, side, side), 0.0, n, (-1.0, 1.0), "zero")
        outs = self._model.run(tensor)
        raw = outs[self._box_out].reshape(-1, 4 + 2 * NUM_KEYPOINTS)
        logits = np.clip(outs[self._score_out].reshape(-1), -SCORE_CLIP, SCORE_CLIP)
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)   # exp(100) overflows float32
        boxes, keypoints = decode_boxes(raw, self._anchors, float(n))
        keep = ((scores >= self.min_score) & (boxes[:, 2] - boxes[:, 0] >= 0) & (boxes[:, 3] - boxes[:, 1] >= 0))
        boxes, keypoints, scores = weighted_nms(boxes[keep], keypoints[keep], scores[keep])
        # Tensor-normalised -> frame-normalised: the tensor is the padded square of side `side` around the
        # frame's centre, no rotation, so x_frame = (x * side - side / 2 + cx) / w, likewise y.
        offset = np.array([cx - 0.5 * side, cy - 0.5 * side], np.float32)
        size = np.array([w, h], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) * side + offset) / size).reshape(-1, 4)
        keypoints = (keypoints * side + offset) / size
        return Detections(boxes.astype(np.float32), keypoints.astype(np.float32), scores)
