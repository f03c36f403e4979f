"""Normals of a depth map, in camera space (differentiable w.r.t. depth).

A pixel's point is ``p = d r`` with ``r = ((u - cx) / fx, -(v - cy) / fy, -1)``
its ray at unit depth. A finite difference of the points along u is
``D_u r + M_u e_x``: ``D_u`` the same difference of the depth, ``M_u`` the depth
the difference puts at the far end of the ray step (the mean of the two
neighbours for a central difference, the neighbour's for a one-sided one) and
``e_x = (1 / fx, 0, 0)`` the ray's change per pixel (along v: ``e_y = (0, -1 / fy, 0)``).
Their cross product has the closed form used in :func:`depth_to_normals`, so
the normals need differences of the depth alone, not of 3-D points: the same
numbers as crossing the point differences (to float rounding), at a third of
the time forward and backward. The fine stage evaluates it on every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .projection import depth_map_to_points


def _neighbour(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """``out[:, r, c] = x[:, r + step, c]`` (axis 1) or ``x[:, r, c + step]`` (axis 2), ``step`` +-1,
    on a (B, H, W) tensor; zero (False) where that neighbour is outside the image."""
    if axis == 2:
        return F.pad(x[:, :, 1:], (0, 1)) if step > 0 else F.pad(x[:, :, :-1], (1, 0))
    return F.pad(x[:, 1:], (0, 0, 0, 1)) if step > 0 else F.pad(x[:, :-1], (0, 0, 1, 0))


def _difference_and_far_depth(depth: torch.Tensor, mask: torch.Tensor, axis: int):
    """``(D, M)`` along ``axis`` (2: +u, 1: +v), both (B, H, W): the depth's derivative (one pixel step)
    and the depth at the step's far end (see the module docstring). Central difference where both
    neighbours are in the mask, one-sided where only one is, both zero where none is (or the pixel
    itself is outside the mask). The weights depend on the mask only."""
    nxt = _neighbour(mask, axis, 1) & mask
    prv = _neighbour(mask, axis, -1) & mask
    both = (nxt & prv).to(depth.dtype)
    only_next, only_prev = (nxt & ~prv).to(depth.dtype), (prv & ~nxt).to(depth.dtype)
    w_next, w_prev = 0.5 * both + only_next, 0.5 * both + only_prev
    d_next, d_prev = _neighbour(depth, axis, 1), _neighbour(depth, axis, -1)
    return (w_next * d_next + (only_prev - only_next) * depth - w_prev * d_prev,
            w_next * d_next + w_prev * d_prev)


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
        camera), oriented toward the camera (n_z > 0 for a surface facing it):
        the cross product of the point differences along v and along u. Pixels
        outside the mask or without any valid neighbour in u or in v get
        (0, 0, 1). Differentiable w.r.t. ``depth``.
    """
    if mask is None:
        mask = torch.ones_like(depth, dtype=torch.bool)
    mask = mask.bool()
    fx, fy = intrinsics[:, 0, None, None].to(depth.dtype), intrinsics[:, 1, None, None].to(depth.dtype)
    ray = depth_map_to_points(torch.ones_like(depth), intrinsics)  # (B, H, W, 3) at unit depth
    du, mu = _difference_and_far_depth(depth, mask, 2)
    dv, mv = _difference_and_far_depth(depth, mask, 1)
    # (dv r + mv e_y) x (du r + mu e_x), times fx fy > 0 (the direction is all that is kept)
    n = torch.stack([fx * mv * du,
                     -fy * mu * dv,
                     fx * ray[..., 0] * mv * du - fy * ray[..., 1] * mu * dv + mv * mu], dim=-1)
    norm2 = (n * n).sum(-1, keepdim=True)
    valid = mask & (norm2[..., 0] > 0)
    n = n * torch.rsqrt(torch.where(valid[..., None], norm2, torch.ones_like(norm2)))
    up = torch.zeros_like(n)
    up[..., 2] = 1.0
    n = torch.where(valid[..., None], n, up)
    return (n, valid) if return_valid else n
