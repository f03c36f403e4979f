"""numpy versions of the three custom TFLite operators in MediaPipe's attention face mesh.

The attention model first predicts the 468-point mesh, then crops its own
feature map around the lips and each eye (16 x 16 cells), refines those
regions from the crops, and maps the refined points back to the 192 x 192
input frame. The three operators that do the cropping and mapping back are
MediaPipe's own (``mediapipe/util/tflite/operations``, version 2 of each);
these functions compute the same, in float32 where MediaPipe does.

Frames: landmarks are in input-tensor pixels of the 192 x 192 crop (x right,
y down); a transform matrix is 4 x 4, row-major, and maps a point of the
small output grid ``(x, y, 0, 1)`` to the feature map or tensor frame it
came from.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["landmarks_to_transform_matrix", "transform_tensor_bilinear", "transform_landmarks", "CUSTOM_OPS"]


def _rotation(r: float) -> np.ndarray:
    c, s = np.cos(r), np.sin(r)
    return np.array([[c, -s], [s, c]], np.float64)


def landmarks_to_transform_matrix(inputs: Sequence[np.ndarray], options: dict, shapes) -> list[np.ndarray]:
    """``Landmarks2TransformMatrix`` v2: the crop around a subset of the mesh points.

    Input: ``(1, 468, 3)`` mesh landmarks. Options: ``left_rotation_idx`` /
    ``right_rotation_idx`` (the crop is turned so that the line between those
    two points is level), ``subset_idxs`` (the points the crop must hold),
    ``scale_x`` / ``scale_y`` (crop size / extent of those points),
    ``output_width`` / ``output_height`` (crop grid), ``target_rotation_radians``.

    Output: ``(1, 4, 4)``: crop-grid pixel ``(x, y, 0, 1)`` -> landmark frame.
    """
    pts = np.asarray(inputs[0], np.float32).reshape(-1, 3)[:, :2].astype(np.float64)
    left, right = pts[int(options["left_rotation_idx"])], pts[int(options["right_rotation_idx"])]
    rotation = float(options.get("target_rotation_radians", 0.0)) - np.arctan2(right[1] - left[1],
                                                                                 right[0] - left[0])
    subset = pts[np.asarray(options["subset_idxs"], np.int64)]
    turned = subset @ _rotation(rotation).T          # the points with the left-right line level
    lo, hi = turned.min(axis=0), turned.max(axis=0)
    size = hi - lo
    centre = _rotation(-rotation) @ (0.5 * (lo + hi))   # the box centre, back in the landmark frame
    w, h = float(options["output_width"]), float(options["output_height"])
    scale = np.array([options["scale_x"] * size[0] / w, options["scale_y"] * size[1] / h])
    m = np.eye(4)
    # shift to the centre, turn back, scale the grid to the box, grid centre to the origin
    m[:2, :2] = _rotation(-rotation) * scale[None, :]
    m[:2, 3] = centre + m[:2, :2] @ np.array([-w / 2.0, -h / 2.0])
    return [m.astype(np.float32).reshape(1, 4, 4)]


def transform_tensor_bilinear(inputs: Sequence[np.ndarray], options: dict, shapes) -> list[np.ndarray]:
    """``TransformTensorBilinear`` v2: sample a ``(1, H, W, C)`` feature map on a transformed grid.

    Inputs: the feature map and the ``(1, 4, 4)`` matrix of
    :func:`landmarks_to_transform_matrix`. Output: ``(1, output_height,
    output_width, C)``. Grid cell ``(x, y)`` samples at the matrix's image of
    its centre, less half a cell (feature-map cell centres at integers);
    bilinear; a sample point outside ``[0, W-1] x [0, H-1]`` gives 0.
    """
    data = np.asarray(inputs[0], np.float32)[0]
    m = np.asarray(inputs[1], np.float32).reshape(4, 4)
    hin, win, _ = data.shape
    hout, wout = int(options["output_height"]), int(options["output_width"])
    row_x = m[0].copy()
    row_y = m[1].copy()
    row_x[3] += row_x[0] * np.float32(0.5) + row_x[1] * np.float32(0.5) - np.float32(0.5)
    row_y[3] += row_y[0] * np.float32(0.5) + row_y[1] * np.float32(0.5) - np.float32(0.5)
    ys, xs = np.mgrid[0:hout, 0:wout].astype(np.float32)
    tx = row_x[0] * xs + row_x[1] * ys + row_x[3]
    ty = row_y[0] * xs + row_y[1] * ys + row_y[3]
    inside = (tx >= 0) & (tx <= win - 1) & (ty >= 0) & (ty <= hin - 1)
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = (tx - x0)[..., None], (ty - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    # Inside the bounds x0 + 1 can still be W (tx exactly W-1): that neighbour reads as 0, weight 0.
    padded = np.zeros((hin + 1, win + 1, data.shape[2]), np.float32)
    padded[:hin, :win] = data
    x0c, y0c = np.clip(x0, 0, win - 1), np.clip(y0, 0, hin - 1)
    q11, q21 = padded[y0c, x0c], padded[y0c, x0c + 1]
    q12, q22 = padded[y0c + 1, x0c], padded[y0c + 1, x0c + 1]
    upper = (1 - fx) * q11 + fx * q21
    lower = (1 - fx) * q12 + fx * q22
    out = fy * lower + (1 - fy) * upper
    out[~inside] = 0.0
    return [out[None].astype(np.float32)]


def transform_landmarks(inputs: Sequence[np.ndarray], options: dict, shapes) -> list[np.ndarray]:
    """``TransformLandmarks`` v2: ``(1, N, 2 or 3)`` points of a crop grid -> the frame the matrix maps to.

    x, y go through the ``(1, 4, 4)`` matrix as ``(x, y, 0, 1)``; a third
    value (depth) is passed on unchanged.
    """
    pts = np.asarray(inputs[0], np.float32)
    m = np.asarray(inputs[1], np.float32).reshape(4, 4)
    out = pts.copy()
    x, y = pts[..., 0], pts[..., 1]
    out[..., 0] = m[0, 0] * x + m[0, 1] * y + m[0, 3]
    out[..., 1] = m[1, 0] * x + m[1, 1] * y + m[1, 3]
    return [out]


CUSTOM_OPS = {
    "Landmarks2TransformMatrix": landmarks_to_transform_matrix,
    "TransformTensorBilinear": transform_tensor_bilinear,
    "TransformLandmarks": transform_landmarks,
}
"""Custom code -> implementation, for :class:`landmarks.tflite_model.TFLiteModel`."""
