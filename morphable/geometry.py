"""Small batched mesh geometry helpers shared by every stage."""
from __future__ import annotations

import torch


def face_normals(verts: torch.Tensor, tris: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(B, V, 3) vertices, (F, 3) triangles -> (B, F, 3) normals (CCW = outward).

    Unnormalised normals have length twice the triangle area.
    """
    v0, v1, v2 = (verts[:, tris[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """(B, V, 3), (F, 3) -> (B, V, 3) area-weighted unit vertex normals."""
    fn = face_normals(verts, tris, normalize=False)
    out = torch.zeros_like(verts)
    for i in range(3):
        out = out.index_add(1, tris[:, i], fn)
    return torch.nn.functional.normalize(out, dim=-1, eps=1e-12)


def vertex_adjacency(tris: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(E, 2) unique undirected edges (i < j) of a triangle mesh."""
    e = torch.cat([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]], 0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)
