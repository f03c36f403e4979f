"""A turned rectangle of an image -> a model's input tensor, as MediaPipe's ImageToTensorCalculator (CPU) makes it.

MediaPipe warps the uint8 frame with OpenCV (``warpPerspective``, bilinear,
from the rectangle's four corners to the tensor's), so the warped pixels are
rounded to uint8 *before* they are scaled to the model's value range. Doing
the same here, with the same OpenCV calls on the same uint8 frame, gives the
same tensor to the last bit; that is what keeps our landmarks within a
fraction of a pixel of MediaPipe's.

Frames: pixel ``(x, y)`` of the image, x right, y down, pixel ``[row, col]``
covering ``[col, col+1) x [row, row+1)``. A rectangle is its centre, its
width and height in pixels and its rotation in radians (positive turns the
rectangle's x axis towards the image's +y, i.e. clockwise on screen).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["crop_to_tensor", "letterbox_rect"]


def letterbox_rect(width: int, height: int) -> tuple[float, float, float, float]:
    """The square ``(cx, cy, w, h)`` (pixels) around a whole ``width x height`` image, its longer side.

    MediaPipe's detectors see the whole frame with its aspect kept: the ROI
    is padded to the tensor's (square) aspect, centred; the padding is zeros.
    """
    side = float(max(width, height))
    return 0.5 * width, 0.5 * height, side, side


def crop_to_tensor(frame: np.ndarray, rect: tuple[float, float, float, float], rotation: float,
                   size: int, value_range: tuple[float, float], border: str) -> np.ndarray:
    """The ``(1, size, size, 3)`` float32 input tensor of ``rect`` turned by ``rotation`` in ``frame``.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        rect: ``(cx, cy, w, h)`` in frame pixels.
        rotation: radians, see the module docstring.
        size: tensor side (pixels).
        value_range: ``(lo, hi)``: uint8 0 maps to lo, 255 to hi.
        border: ``"zero"`` (pixels outside the frame are 0, i.e. ``lo``) or
            ``"replicate"`` (the nearest edge pixel), as the graph asks.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    cx, cy, w, h = rect
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (cx, cy, w, h, rotation)):
        raise ValueError(f"bad crop rectangle {rect}, rotation {rotation}")
    # The corners in OpenCV's RotatedRect order (bottom-left, top-left, top-right, bottom-right of the
    # unturned box), onto the tensor's corners in the same order: no mirroring.
    corners = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(rotation) * 180.0 / math.pi))
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), dst)
    mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
    warped = cv2.warpPerspective(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)
    lo, hi = value_range
    scale = np.float32((hi - lo) / 255.0)
    return (warped.astype(np.float32) * scale + np.float32(lo))[None]
