"""Pictures for a person to look at: shaded geometry, the overlay on the photo, the report sheet."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from morphable.geometry import vertex_normals

from .renderer import Renderer

LIGHT_DIR = (0.3, 0.4, 1.0)  # camera frame, toward the light: upper right, from the viewer's side


def shade_geometry(renderer: Renderer, verts_cam: torch.Tensor, tris: torch.Tensor, intrinsics: torch.Tensor,
                   size: int) -> tuple:
    """Grey clay rendering of (B, V, 3) camera-frame meshes: ((B, S, S, 3) image, (B, S, S) mask)."""
    with torch.no_grad():
        frags = renderer.rasterize(verts_cam, tris, intrinsics, size, size)
        n = torch.nn.functional.normalize(renderer.interpolate(vertex_normals(verts_cam, tris), frags), dim=-1)
        return shade_normals(n, frags.mask), frags.mask


def shade_normals(normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) camera-frame normals -> (B, H, W, 3) clay shading (a key light plus ambient)."""
    light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIR, dtype=normals.dtype, device=normals.device), dim=0)
    lam = (normals * light).sum(-1).clamp_min(0.0)
    half = torch.nn.functional.normalize(light + torch.tensor([0.0, 0.0, 1.0], device=normals.device), dim=0)
    spec = (normals * half).sum(-1).clamp_min(0.0) ** 40
    v = (0.18 + 0.72 * lam + 0.15 * spec).clamp(0, 1) * mask
    base = torch.tensor([0.86, 0.84, 0.80], device=normals.device)
    bg = torch.tensor([0.12, 0.12, 0.14], device=normals.device)
    return torch.where(mask[..., None], v[..., None] * base, bg)


def overlay(photo_crop: np.ndarray, shaded: np.ndarray, mask: np.ndarray, detected: Optional[np.ndarray] = None,
            projected: Optional[np.ndarray] = None, alpha: float = 0.55) -> np.ndarray:
    """The shaded mesh blended over the crop; detected landmarks green, the model's red. (S, S, 3) float."""
    out = photo_crop.copy()
    m = mask[..., None].astype(np.float32) * alpha
    out = out * (1 - m) + shaded * m
    img = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    r = max(1, photo_crop.shape[0] // 300)
    for pts, colour in ((detected, (40, 220, 40)), (projected, (230, 40, 40))):
        if pts is None:
            continue
        for u, v in np.asarray(pts)[:, :2]:
            if np.isfinite(u) and np.isfinite(v):
                cv2.circle(img, (int(u), int(v)), r, colour, -1, lineType=cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def report_sheet(panels: Sequence[np.ndarray], titles: Sequence[str], tile: int = 384) -> np.ndarray:
    """Panels (each (H, W, 3) float) side by side with a title over each: (tile+28, n*tile, 3)."""
    tiles = []
    for img, title in zip(panels, titles):
        t = cv2.resize(np.clip(img, 0, 1).astype(np.float32), (tile, tile), interpolation=cv2.INTER_AREA)
        # text drawn on 8 bits: OpenCV 5 refuses putText on float images (4.x took them)
        head = np.full((28, tile, 3), 255, np.uint8)
        cv2.putText(head, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (26, 26, 26), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([head.astype(np.float32) / 255.0, t], 0))
    return np.concatenate(tiles, 1)
