"""The one place where camera space meets pixels.

Camera space (mm): right-handed, +x right, +y up, the camera looks down -z
(OpenGL, as nvdiffrast expects). A visible point has z < 0; its *depth* is
``d = -z > 0``.

Image space (pixels): ``(u, v)`` with u to the right and v downward. Pixel
``[row, col]`` covers ``[col, col+1) x [row, row+1)``; its centre is
``(col + 0.5, row + 0.5)``.

Intrinsics are ``(..., 4)`` tensors ``(fx, fy, cx, cy)`` in pixels.

Every sign flip between the two frames lives in these functions; call them
rather than writing ``-y`` or ``-z`` elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _split(intrinsics: torch.Tensor):
    k = intrinsics
    return k[..., 0], k[..., 1], k[..., 2], k[..., 3]


def camera_to_pixel(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-space points, (B, 4) intrinsics -> (B, N, 3) ``(u, v, depth)``."""
    fx, fy, cx, cy = (t[:, None] for t in _split(intrinsics))
    depth = -points[..., 2]
    safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    u = cx + fx * points[..., 0] / safe
    v = cy - fy * points[..., 1] / safe
    return torch.stack([u, v, depth], dim=-1)


def pixel_to_camera(uv: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Back-project. ``uv`` (B, N, 2) pixels, ``depth`` (B, N) mm, (B, 4) -> (B, N, 3) camera space."""
    fx, fy, cx, cy = (t[:, None] for t in _split(intrinsics))
    x = (uv[..., 0] - cx) / fx * depth
    y = -(uv[..., 1] - cy) / fy * depth
    return torch.stack([x, y, -depth], dim=-1)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel-centre coordinates ``(u, v)``."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u, v], dim=-1)


def sample_at_pixels(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (B, H, W, C) maps at (B, N, 2) ``(u, v)`` pixel coordinates -> (B, N, C).

    A pixel's centre returns that pixel's value; the map is zero outside (a point within half a
    pixel of the edge blends toward zero: callers mask such points).
    """
    h, w = image.shape[1:3]
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[:, :, None]
    out = F.grid_sample(image.permute(0, 3, 1, 2), grid.to(image), mode="bilinear", align_corners=False)
    return out[..., 0].permute(0, 2, 1)


def depth_map_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, H, W) depth in mm, (B, 4) -> (B, H, W, 3) camera-space points of every pixel centre."""
    b, h, w = depth.shape
    grid = pixel_grid(h, w, depth.device, depth.dtype).reshape(1, h * w, 2).expand(b, -1, -1)
    return pixel_to_camera(grid, depth.reshape(b, h * w), intrinsics).reshape(b, h, w, 3)


def camera_to_ndc_clip(points: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                       near: float = 10.0, far: float = 10000.0) -> torch.Tensor:
    """(B, N, 3) camera space -> (B, N, 4) clip coordinates for a rasteriser (nvdiffrast).

    NDC x = 2u/W - 1 and NDC y = 2v/H - 1, so that a rasteriser that stores
    NDC y = -1 in row 0 (nvdiffrast does) writes pixel row r where v is in
    [r, r+1): no image flip afterwards. Triangle winding is mirrored by this,
    which does not matter to a rasteriser that does not cull. ``near``/``far`` in mm.
    """
    fx, fy, cx, cy = (t[:, None] for t in _split(intrinsics))
    x, y, z = points.unbind(-1)
    w = -z
    # u = cx + fx x / w -> ndc_x = 2u/W - 1;  v = cy - fy y / w -> ndc_y = 2v/H - 1
    cx_ = 2.0 * fx / width * x + (2.0 * cx / width - 1.0) * w
    cy_ = -2.0 * fy / height * y + (2.0 * cy / height - 1.0) * w
    a = (far + near) / (far - near)
    bterm = 2.0 * far * near / (far - near)
    cz = a * w - bterm
    return torch.stack([cx_, cy_, cz, w], dim=-1)


def camera_to_pixel_jacobian(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, N, 3), (B, 4) -> (B, N, 2, 3): d(u, v) / d(x, y, z) of :func:`camera_to_pixel`."""
    fx, fy = intrinsics[:, 0, None], intrinsics[:, 1, None]
    x, y, z = points.unbind(-1)
    d = (-z).clamp_min(1e-9)
    zero = torch.zeros_like(x)
    du = torch.stack([fx / d, zero, fx * x / d ** 2], -1)
    dv = torch.stack([zero, -fy / d, -fy * y / d ** 2], -1)
    return torch.stack([du, dv], -2)
