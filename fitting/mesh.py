"""The mesh every stage returns: a plain data object (numpy), like a trimesh.Trimesh with UVs kept apart."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from morphable.geometry import vertex_normals


@dataclass
class Mesh:
    """One triangle mesh in mm.

    - ``vertices`` (V, 3) float32, mm, in the frame the producer states
      (stages return model-frame meshes: +x subject's left, +y up, +z out of the face).
    - ``triangles`` (F, 3) int64, counter-clockwise seen from outside.
    - ``uvs`` (T, 2), v up; ``uv_triangles`` (F, 3) into ``uvs``. The ICT model's UVs lie on
      two unit tiles side by side (u in [0, 2]); the fine mesh's atlas scales them into [0, 1].
    - ``texture`` (Ht, Wt, 3) float in [0, 1]; row 0 is the top of the image (v = 1).
    - ``vertex_colors`` (V, 3) float in [0, 1].
    - ``normals`` (V, 3) unit vertex normals; computed when absent.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: Optional[np.ndarray] = None
    uv_triangles: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    vertex_colors: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None

    def __post_init__(self):
        self.vertices = _np(self.vertices, np.float32)
        self.triangles = _np(self.triangles, np.int64)
        for name, dt in (("uvs", np.float32), ("uv_triangles", np.int64), ("texture", np.float32),
                         ("vertex_colors", np.float32), ("normals", np.float32)):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _np(value, dt))
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {self.triangles.shape}")
        if (self.uvs is None) != (self.uv_triangles is None):
            raise ValueError("uvs and uv_triangles go together")

    def vertex_normals(self) -> np.ndarray:
        if self.normals is None:
            v = torch.from_numpy(self.vertices)[None]
            self.normals = vertex_normals(v, torch.from_numpy(self.triangles))[0].numpy()
        return self.normals

    @classmethod
    def from_model(cls, model, vertices, **kwargs) -> "Mesh":
        """A mesh with a morphable model's topology and UV layout; ``vertices`` (V, 3)."""
        return cls(vertices=vertices, triangles=model.triangles, uvs=model.uvs,
                   uv_triangles=model.uv_triangles, **kwargs)


def grid_mesh(points_model: np.ndarray, mask: np.ndarray, colors: np.ndarray) -> Mesh:
    """A triangle mesh over the mask's pixel grid: two triangles per 2x2 block of masked pixels.

    ``points_model`` (H, W, 3) mm, ``mask`` (H, W) bool, ``colors`` (H, W, 3).
    Triangles are wound counter-clockwise as seen from the camera.
    """
    h, w = mask.shape
    idx = np.full((h, w), -1, np.int64)
    idx[mask] = np.arange(int(mask.sum()))
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    quad = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
    # Image rows go down while camera y goes up: (a, c, b) is counter-clockwise seen from the camera.
    tris = np.concatenate([np.stack([a[quad], c[quad], b[quad]], 1), np.stack([b[quad], c[quad], d[quad]], 1)])
    return Mesh(points_model[mask], tris, vertex_colors=colors[mask])


def _np(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)
