"""Cast shadows of a depth map under a distant light, tested in screen space.

A pixel is in shadow when the ray from its surface point toward the light
passes behind the depth map (the surface seen at some pixel along the ray is
nearer the camera than the ray's point by more than a margin): the nose's
shadow on the cheek, the brow's in the eye socket. Only occluders the depth map
sees are found, which for a face seen from the front are the ones that matter.

Frames and units as in :mod:`sfs.refine`: depth ``d = -z`` in mm, camera
space +x right, +y up, +z toward the camera; light directions point toward
the light.
"""
from __future__ import annotations

import torch

from .projection import camera_to_pixel, depth_map_to_points, sample_at_pixels


def dominant_light_direction(light: torch.Tensor) -> torch.Tensor:
    """(B, 9, 3) SH coefficients (``sfs.sh`` order: Y00, Y1-1 (y), Y10 (z), Y11 (x), ...) -> (B, 3) unit
    direction of their linear band, grey (mean of the channels): where the light mostly comes from."""
    c = light.mean(-1)
    d = torch.stack([c[:, 3], c[:, 1], c[:, 2]], -1)
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cast_shadows(depth: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor, direction: torch.Tensor,
                 reach_mm: float = 40.0, step_mm: float = 1.0, margin_mm: float = 1.0) -> torch.Tensor:
    """(B, H, W) bool: mask pixels whose ray toward ``direction`` meets the depth map within ``reach_mm``.

    Args:
        depth: (B, H, W) mm; mask: (B, H, W) bool, the pixels that are surface (others never occlude).
        intrinsics: (B, 4) ``(fx, fy, cx, cy)`` px; direction: (B, 3) unit, camera frame, toward the light.
        reach_mm, step_mm: how far and how finely the ray is marched; margin_mm: how far in front of
            the ray's point the seen surface must be (the depth map's own relief near the start).
    """
    b, h, w = depth.shape
    pts = depth_map_to_points(depth, intrinsics).reshape(b, h * w, 3)
    # off the surface: far behind everything (never in front of a ray's point), finite for the lookup
    surface = torch.where(mask, depth, torch.full_like(depth, float("inf"))).nan_to_num(posinf=1e9)[..., None]
    shadow = torch.zeros(b, h * w, dtype=torch.bool, device=depth.device)
    steps = torch.arange(step_mm, reach_mm + 1e-6, step_mm, device=depth.device, dtype=depth.dtype)
    for t in steps:  # a few dozen steps, each over every pixel at once
        uvd = camera_to_pixel(pts + t * direction[:, None], intrinsics)
        seen = sample_at_pixels(surface, uvd[..., :2])[..., 0]
        # within half a pixel of the edge the lookup blends toward 0 (sample_at_pixels): not a surface
        inside = (uvd[..., 0] >= 0.5) & (uvd[..., 0] <= w - 0.5) & (uvd[..., 1] >= 0.5) & (uvd[..., 1] <= h - 0.5)
        shadow |= inside & (seen < uvd[..., 2] - margin_mm)
    return shadow.reshape(b, h, w) & mask
