"""Small batched mesh geometry helpers shared by every stage."""
from __future__ import annotations

import torch


def face_normals(verts: torch.Tensor, tris: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(B, V, 3) vertices, (F, 3) triangles -> (B, F, 3) normals (CCW = outward).

    Unnormalised normals have length twice the triangle area.
    """
    # index_select, not verts[:, tris[:, i]]: the backward of advanced indexing accumulates with
    # index_put, which on the CPU adds the repeated indices in thread order (results differ in the
    # last bits from run to run with two threads or more); index_select's backward (index_add) does not.
    tris = tris.to(verts.device)
    v0, v1, v2 = (verts.index_select(1, tris[:, i]) for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """(B, V, 3), (F, 3) -> (B, V, 3) area-weighted unit vertex normals."""
    fn = face_normals(verts, tris, normalize=False)
    out = torch.zeros_like(verts)
    for i in range(3):
        out = out.index_add(1, tris[:, i], fn)
    return torch.nn.functional.normalize(out, dim=-1, eps=1e-12)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True):
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991) of two (..., N, 3) point sets
    (batch dimensions broadcast, e.g. one (N, 3) source against (B, N, 3) targets).

    Returns ``(s, R, t)``: (...) scale, (..., 3, 3) proper rotation, (..., 3) translation; for (N, 3)
    inputs a scalar tensor, (3, 3) and (3,).
    """
    mu_s, mu_d = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    u, sig, vh = torch.linalg.svd(xd.transpose(-1, -2) @ xs / src.shape[-2])
    d = torch.ones_like(sig)
    d[..., 2] = torch.where(torch.det(u) * torch.det(vh) < 0, -1.0, 1.0)  # a reflection: flip the weakest axis
    rot = (u * d[..., None, :]) @ vh
    s = (sig * d).sum(-1) / (xs ** 2).sum(-1).mean(-1) if with_scale else torch.ones_like(sig[..., 0])
    return s, rot, mu_d[..., 0, :] - s[..., None] * (rot @ mu_s[..., 0, :, None])[..., 0]
