"""The crop to a model's input: OpenCV 4's fixed-point bilinear warp, whatever OpenCV is installed."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from landmarks.roi_crop import _box_corners, _opencv_warps_in_fixed_point, crop_to_tensor, warp_bilinear_u8


def _reference_warp(src, inverse, size, border):
    """The arithmetic spelled out: 1/32-pixel source positions, integer weights summing to 32768."""
    h, w = src.shape[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    p = np.einsum("ij,jhw->ihw", inverse, np.stack([xs, ys, np.ones_like(xs)]))
    fx, fy = (np.rint(p[k] / p[2] * 32).astype(np.int64) for k in (0, 1))
    sx, sy, ax, ay = fx >> 5, fy >> 5, fx & 31, fy & 31
    out = np.zeros((size, size, 3), np.int64)
    for dy, dx, wt in ((0, 0, (32 - ay) * (32 - ax)), (0, 1, (32 - ay) * ax), (1, 0, ay * (32 - ax)), (1, 1, ay * ax)):
        ty, tx = sy + dy, sx + dx
        inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        px = src[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)].astype(np.int64)
        if border == "zero":
            px[~inside] = 0
        out += px * (wt * 32)[..., None]
    return ((out + 16384) >> 15).astype(np.uint8)


@pytest.mark.parametrize("border", ["zero", "replicate"])
@pytest.mark.parametrize("rect, rotation", [((60.0, 50.0, 90.0, 90.0), 0.0), ((20.5, 80.2, 140.0, 140.0), 2.9),
                                            ((70.0, 40.0, 30.0, 30.0), -0.4)])
def test_warp_is_opencv4_fixed_point(border, rect, rotation):
    img = np.random.default_rng(1).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    corners = _box_corners(*rect, rotation)
    forward = cv2.getPerspectiveTransform(corners, np.array([[0, 48], [0, 0], [48, 0], [48, 48]], np.float32))
    inverse = cv2.invert(forward, flags=cv2.DECOMP_LU)[1]
    ours = warp_bilinear_u8(img, inverse, 48, border)
    assert np.abs(ours.astype(int) - _reference_warp(img, inverse, 48, border)).max() <= 1
    assert (ours != _reference_warp(img, inverse, 48, border)).mean() < 1e-3   # one rounding step, rarely
    if _opencv_warps_in_fixed_point():   # OpenCV 4: its own warpPerspective is the same arithmetic
        mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
        theirs = cv2.warpPerspective(img, forward, (48, 48), flags=cv2.INTER_LINEAR, borderMode=mode)
        assert np.array_equal(ours, theirs)


def test_crop_value_range_and_orientation():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:50] = 255                      # top half white
    t = crop_to_tensor(img, (50.0, 50.0, 100.0, 100.0), 0.0, 64, (-1.0, 1.0), "zero")
    assert t.shape == (1, 64, 64, 3) and t.dtype == np.float32
    assert t[0, 5, 32, 0] == 1.0 and t[0, 60, 32, 0] == -1.0        # not mirrored, 255 -> 1, 0 -> -1
    turned = crop_to_tensor(img, (50.0, 50.0, 100.0, 100.0), np.pi, 64, (0.0, 1.0), "replicate")
    assert turned[0, 5, 32, 0] == 0.0 and turned[0, 60, 32, 0] == 1.0   # half a turn: the white half below
    with pytest.raises(ValueError, match="bad crop rectangle"):
        crop_to_tensor(img, (50.0, 50.0, 0.0, 100.0), 0.0, 64, (0.0, 1.0), "zero")
