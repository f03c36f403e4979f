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


def mesh_edges(tris: torch.Tensor) -> torch.Tensor:
    """(F, 3) triangles -> (E, 2) int64: each undirected edge once, as (smaller index, larger)."""
    tris = torch.as_tensor(tris, dtype=torch.long)
    e = torch.sort(torch.cat([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), dim=1).values
    # one int64 key per edge, smaller * n + larger: unique on it is the rows' unique in the same (lexicographic)
    # order, and 1-D unique is far cheaper than unique(dim=0) (0.21 s -> about 0.01 s for the ICT face)
    n = int(tris.max()) + 1 if tris.numel() else 1
    keys = torch.unique(e[:, 0] * n + e[:, 1])
    return torch.stack([keys // n, keys % n], 1)


def carry_over_surface(values: torch.Tensor, known: torch.Tensor, verts: torch.Tensor, tris: torch.Tensor,
                       reach_mm: float) -> torch.Tensor:
    """Per-vertex values carried from the ``known`` vertices onto the rest of the surface, fading out.

    Each vertex not known takes the mean of its neighbours' values, ring by ring along the mesh's
    edges out from the known set (a constant continuation of the edge's values), times a smoothstep
    of its distance to the known set (the shortest path along the edges): 1 at the set, 0 from
    ``reach_mm`` on.

    Args:
        values: (B, V) any unit; read only where ``known``.
        known: (B, V) bool.
        verts: (B, V, 3) mm, for the edge lengths.
        tris: (F, 3) triangles.
        reach_mm: distance over which the carried values fade to 0.

    Returns:
        (B, V): ``values`` where known, the faded continuation elsewhere (0 where nothing reaches).
    """
    edges = mesh_edges(tris).to(verts.device)
    src = torch.cat([edges[:, 0], edges[:, 1]])  # both directions
    dst = torch.cat([edges[:, 1], edges[:, 0]])
    length = (verts[:, src] - verts[:, dst]).norm(dim=-1)  # (B, 2E)
    b = values.shape[0]
    far = torch.full_like(length[:, :1], float("inf"))
    # shortest paths within the reach (Bellman-Ford, all edges at once, until nothing shortens)
    dist = torch.where(known, 0.0, far).to(length.dtype)
    while True:
        via = dist[:, src] + length
        via = torch.where(via < reach_mm, via, far)
        shorter = dist.scatter_reduce(1, dst.expand(b, -1), via, "amin")
        if torch.equal(shorter, dist):
            break
        dist = shorter
    # values: ring by ring from the known set, over the vertices within the reach
    out = torch.where(known, values, torch.zeros_like(values))
    reached = known.clone()
    within = dist < reach_mm
    while True:
        total = torch.zeros_like(out).index_add(1, dst, out[:, src] * reached[:, src])
        count = torch.zeros_like(out).index_add(1, dst, reached[:, src].to(out.dtype))
        ring = ~reached & within & (count > 0)
        if not bool(ring.any()):
            break
        out = torch.where(ring, total / count.clamp_min(1), out)
        reached = reached | ring
    t = torch.where(reached, (1.0 - dist / reach_mm).clamp(0.0, 1.0), torch.zeros_like(dist)).to(out.dtype)
    return torch.where(known, values, out * t * t * (3.0 - 2.0 * t))
