"""Synthetic image-space ground truth for the sfs tests (no mesh, no model)."""
from __future__ import annotations

import math

import torch

from sfs.projection import pixel_grid


def rays(h, w, intr):
    """(B, H, W, 3) camera-space ray directions with z = -1 (so the point is depth * ray)."""
    b = intr.shape[0]
    g = pixel_grid(h, w, intr.device, intr.dtype)[None].expand(b, -1, -1, -1)
    fx, fy, cx, cy = (intr[:, i, None, None] for i in range(4))
    # same convention as sfs.projection.pixel_to_camera with depth 1
    from sfs.projection import pixel_to_camera
    return pixel_to_camera(g.reshape(b, -1, 2), torch.ones(b, h * w, dtype=intr.dtype, device=intr.device),
                           intr).reshape(b, h, w, 3)


def intrinsics(h, w, f, b=1, dtype=torch.float64):
    return torch.tensor([[f, f, w / 2.0, h / 2.0]], dtype=dtype).expand(b, 4).clone()


def sphere_depth(h, w, intr, center, radius):
    """Depth map (B, H, W) of a sphere, mask, and analytic normals (B, H, W, 3)."""
    r = rays(h, w, intr)
    c = torch.as_tensor(center, dtype=intr.dtype)
    # |t r - c|^2 = R^2 -> t^2 r.r - 2 t r.c + c.c - R^2 = 0 (near root)
    a = (r * r).sum(-1)
    bq = -2.0 * (r * c).sum(-1)
    cq = (c * c).sum() - radius ** 2
    disc = bq * bq - 4 * a * cq
    mask = disc > 0
    t = (-bq - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    depth = torch.where(mask, t, torch.full_like(t, float(-c[2])))
    n = (depth[..., None] * r - c) / radius
    return depth, mask, n


def plane_depth(h, w, intr, point, normal):
    r = rays(h, w, intr)
    n = torch.as_tensor(normal, dtype=intr.dtype)
    n = n / n.norm()
    p = torch.as_tensor(point, dtype=intr.dtype)
    t = (n * p).sum() / (r * n).sum(-1)
    return t, n


def angular_error_deg(n1, n2):
    cos = (n1 * n2).sum(-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))
