"""Normals of a depth map, in camera space (differentiable w.r.t. depth)."""
from __future__ import annotations

import torch

from .projection import depth_map_to_points


def _shift(x: torch.Tensor, dy: int, dx: int, fill) -> torch.Tensor:
    """``out[:, r, c] = x[:, r + dy, c + dx]`` on a (B, H, W, ...) tensor; ``fill`` outside."""
    b, h, w = x.shape[:3]
    out = torch.full_like(x, fill)
    rs_src = slice(max(dy, 0), h + min(dy, 0))
    rs_dst = slice(max(-dy, 0), h + min(-dy, 0))
    cs_src = slice(max(dx, 0), w + min(dx, 0))
    cs_dst = slice(max(-dx, 0), w + min(-dx, 0))
    out[:, rs_dst, cs_dst] = x[:, rs_src, cs_src]
    return out


def _masked_diff(p: torch.Tensor, mask: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Derivative of points ``p`` (B, H, W, 3) along +(dy, dx) (one pixel step).

    Central difference where both neighbours are in the mask, one-sided where only
    one is, zero where none is (or the pixel itself is outside the mask).
    """
    p_next, p_prev = _shift(p, dy, dx, 0.0), _shift(p, -dy, -dx, 0.0)
    m_next = _shift(mask, dy, dx, False) & mask
    m_prev = _shift(mask, -dy, -dx, False) & mask
    both = (m_next & m_prev)[..., None]
    central = 0.5 * (p_next - p_prev)
    forward = p_next - p
    backward = p - p_prev
    zero = torch.zeros_like(p)
    return torch.where(both, central,
                       torch.where(m_next[..., None], forward,
                                   torch.where(m_prev[..., None], backward, zero)))


def depth_to_normals(depth: torch.Tensor, intrinsics: torch.Tensor, mask: torch.Tensor | None = None,
                     return_valid: bool = False):
    """Unit normals of a depth map.

    Args:
        depth: (B, H, W) positive depth ``d = -z`` in mm.
        intrinsics: (B, 4) ``(fx, fy, cx, cy)`` in pixels.
        mask: (B, H, W) bool, pixels that belong to the surface (None: all).
            Neighbours outside the mask are never used (one-sided differences at the border).
        return_valid: also return the (B, H, W) bool map of pixels that got a normal.

    Returns:
        (B, H, W, 3) unit normals in camera space (+x right, +y up, +z toward the
        camera), oriented toward the camera (n_z > 0 for a surface facing it).
        Pixels outside the mask or without any valid neighbour in u or in v get
        (0, 0, 1). Differentiable w.r.t. ``depth``.
    """
    if mask is None:
        mask = torch.ones_like(depth, dtype=torch.bool)
    mask = mask.bool()
    pts = depth_map_to_points(depth, intrinsics)       # (B, H, W, 3)
    du = _masked_diff(pts, mask, 0, 1)                  # along +u (right, ~ +x)
    dv = _masked_diff(pts, mask, 1, 0)                  # along +v (down, ~ -y)
    # dv x du: (-y) x (+x) = +z, i.e. toward the camera.
    n = torch.cross(dv, du, dim=-1)
    norm2 = (n * n).sum(-1, keepdim=True)
    valid = mask & (norm2[..., 0] > 0)
    safe = torch.where(valid[..., None], norm2, torch.ones_like(norm2))
    n = n * torch.rsqrt(safe)
    fallback = torch.zeros_like(n)
    fallback[..., 2] = 1.0
    n = torch.where(valid[..., None], n, fallback)
    return (n, valid) if return_valid else n
