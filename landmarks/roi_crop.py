"""A turned rectangle of an image -> a model's input tensor, as MediaPipe's ImageToTensorCalculator (CPU) makes it.

MediaPipe warps the uint8 frame with OpenCV (``warpPerspective``, bilinear,
from the rectangle's four corners to the tensor's), so the warped pixels are
rounded to uint8 *before* they are scaled to the model's value range, and
OpenCV's bilinear warp of uint8 images works in fixed point: source
positions in 1/32 pixel, weights in 1/32768. OpenCV 4's ``warpPerspective``
still does exactly that and is used where it does (checked once, at first
use); OpenCV 5 resamples differently (measured: 2-6 % of the tensor values
1-4 levels off, and on a poorly detected upside-down face Face Mesh's points
2 px off MediaPipe's), so there :func:`warp_bilinear_u8` computes OpenCV 4's
fixed-point map itself and resamples with ``cv2.remap``, whose fixed-point
path is unchanged.

Frames: pixel ``(x, y)`` of the image, x right, y down, pixel ``[row, col]``
covering ``[col, col+1) x [row, row+1)``. A rectangle is its centre, its
width and height in pixels and its rotation in radians (positive turns the
rectangle's x axis towards the image's +y, i.e. clockwise on screen).
"""
from __future__ import annotations

import math
from functools import lru_cache

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
    corners = _box_corners(cx, cy, w, h, rotation)
    # Onto the tensor's corners in the same order: no mirroring. As MediaPipe: the 3 x 3 map from
    # the four point pairs (cv2.getPerspectiveTransform: an 8 x 8 solve in double), inverted by LU.
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    forward = cv2.getPerspectiveTransform(corners, dst)
    if _opencv_warps_in_fixed_point():    # OpenCV 4: its own warp is this arithmetic, and 2-3x faster
        mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
        warped = cv2.warpPerspective(frame, forward, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)
    else:
        warped = warp_bilinear_u8(frame, cv2.invert(forward, flags=cv2.DECOMP_LU)[1], size, border)
    lo, hi = value_range
    scale = np.float32((hi - lo) / 255.0)
    return (warped.astype(np.float32) * scale + np.float32(lo))[None]


def _box_corners(cx: float, cy: float, w: float, h: float, rotation: float) -> np.ndarray:
    """``(4, 2)`` float32 corners of the turned rectangle: bottom-left, top-left, top-right,
    bottom-right of the unturned box, computed in float32 the way OpenCV 4's ``RotatedRect::points``
    does (OpenCV 5 rounds differently in the last bit, which moves the tensor)."""
    # MediaPipe passes `rotation * 180.f / M_PI`: a float product divided by the double pi, kept as float
    degrees = np.float32(float(np.float32(rotation) * np.float32(180.0)) / math.pi)
    angle = float(degrees) * math.pi / 180.0
    b = np.float32(math.cos(angle)) * np.float32(0.5)
    a = np.float32(math.sin(angle)) * np.float32(0.5)
    cx, cy, w, h = (np.float32(v) for v in (cx, cy, w, h))
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    p2 = (np.float32(2) * cx - p0[0], np.float32(2) * cy - p0[1])
    p3 = (np.float32(2) * cx - p1[0], np.float32(2) * cy - p1[1])
    return np.array([p0, p1, p2, p3], np.float32)


INTER_BITS = 5                      # source positions in 1/32 pixel
INTER_TAB = 1 << INTER_BITS
COEF_BITS = 15                      # bilinear weights in 1/32768


def warp_bilinear_u8(src: np.ndarray, inverse: np.ndarray, size: int, border: str) -> np.ndarray:
    """``(size, size, C)`` uint8: ``src`` (``(H, W, C)`` uint8) sampled at ``inverse @ (x, y, 1)`` of each
    output pixel, bilinear, in OpenCV 4's fixed point (``warpPerspective`` with ``INTER_LINEAR``).

    Per output pixel: the source position in double, rounded to 1/32 pixel;
    weights ``(32 - fx)(32 - fy) * 32`` etc. (they sum to 32768 exactly);
    value = ``(sum of weight x pixel + 16384) >> 15``. Outside the image:
    ``border="zero"`` reads 0, ``"replicate"`` the nearest edge pixel.
    """
    grid = _pixel_grid(size)
    # Source position of every output pixel, in double (OpenCV's arithmetic, up to the order of the
    # additions: a rounding step apart, which moves a 1/32-pixel position only when it lies within about
    # 1e-12 of a rounding boundary), then in 1/32 pixel, rounded half to even as OpenCV does.
    src_pos = cv2.perspectiveTransform(grid, np.asarray(inverse, np.float64)).reshape(size, size, 2)
    limit = float(np.iinfo(np.int32).max)
    fixed = np.rint(np.clip(src_pos * INTER_TAB, -limit - 1, limit)).astype(np.int32)
    fx, fy = fixed[..., 0], fixed[..., 1]
    sx = np.clip(fx >> INTER_BITS, -32768, 32767)          # stored as short by OpenCV
    sy = np.clip(fy >> INTER_BITS, -32768, 32767)
    ax = fx & (INTER_TAB - 1)
    ay = fy & (INTER_TAB - 1)
    # The fixed-point bilinear resampling itself: cv2.remap given OpenCV's own fixed-point map (integer
    # source pixel + 1/32-pixel fraction index), which it reads with its 1/32768 weight table, the same
    # in OpenCV 4 and 5 (unlike warpPerspective, which OpenCV 5 no longer computes this way).
    pixel_map = np.stack([sx, sy], axis=-1).astype(np.int16)
    fraction_map = (ay * INTER_TAB + ax).astype(np.uint16)
    mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
    return cv2.remap(src, pixel_map, fraction_map, cv2.INTER_LINEAR, borderMode=mode, borderValue=(0, 0, 0))


_GRIDS: dict[int, np.ndarray] = {}


def _pixel_grid(size: int) -> np.ndarray:
    """``(size * size, 1, 2)`` float64 ``(x, y)`` of every output pixel, row-major (cached per size)."""
    if size not in _GRIDS:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        _GRIDS[size] = np.ascontiguousarray(np.stack([xs, ys], axis=-1).reshape(-1, 1, 2))
    return _GRIDS[size]


@lru_cache(maxsize=1)
def _opencv_warps_in_fixed_point() -> bool:
    """Whether this OpenCV's ``warpPerspective`` (uint8, bilinear) gives :func:`warp_bilinear_u8`'s
    pixels: checked once on a turned, scaled, partly outside crop of a random image (OpenCV 4.11: yes;
    5.0: no)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    corners = _box_corners(70.3, 41.7, 150.2, 150.2, 0.7)
    forward = cv2.getPerspectiveTransform(corners, np.array([[0, 64], [0, 0], [64, 0], [64, 64]], np.float32))
    theirs = cv2.warpPerspective(img, forward, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ours = warp_bilinear_u8(img, cv2.invert(forward, flags=cv2.DECOMP_LU)[1], 64, "replicate")
    return bool(np.array_equal(theirs, ours))
