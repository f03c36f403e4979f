"""Uniform mesh Laplacian and landmark-driven Laplacian deformation (METHOD.md eq. 2, 3).

    L(v_i) = v_i - (1/N_i) sum_{j in N(i)} v_j                              (2)
    E(V') = ||L V' - L V||^2 + sum_k w_k ||S_k V' - mu_k||^2                 (3)

plus, optionally, a displacement prior ``alpha ||V' - V||^2`` (``alpha``): eq. 3 alone puts
no price on a smooth warp (its Laplacian is ~0), so any landmark weight, however small, is met
exactly by bending the whole mesh; ``alpha`` > 0 makes that bending cost something
(:class:`fitting.stages.medium.MediumSettings` states its size).

``V`` (V, 3) are the input vertices, ``V'`` the deformed ones, in mm, in any
frame (the uniform Laplacian commutes with rigid motion, so deforming in camera
space and mapping back with the inverse rigid transform gives the same mesh as
deforming in the model frame with transformed targets). ``S`` (K, V) is a
sparse *anchor matrix*: row k holds the barycentric weights of the surface
point that landmark k is attached to (one 1 for a vertex, three weights for a
point inside a triangle), and ``mu`` (K, 3) are the landmark targets, mm.

E is quadratic and separable in x, y, z with the same matrix, so the minimiser
solves the normal equations

    (L^T L + alpha I + S^T W S) V' = (L^T L + alpha I) V + S^T W mu,       W = diag(w)

with one sparse LU factorisation (:func:`scipy.sparse.linalg.splu`) and three
right-hand sides. Vertices listed as *fixed* are hard constraints: they are
eliminated from the unknowns (their value is the input value), which is exact
and keeps the system well conditioned, unlike a huge penalty weight.

A connected component that no landmark (with w > 0) and no fixed vertex
touches is only determined up to a translation by eq. 3; such components
(including isolated vertices) are held in place, which is the minimiser of
eq. 3 with the smallest displacement.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["uniform_laplacian", "anchor_matrix", "deformation_energy", "DeformSolver", "InfluenceSolver", "deform",
           "deform_batch"]


def _np(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(dtype, copy=False) if dtype is not None else x


def _checked_weights(weights) -> np.ndarray:
    """Landmark weights as float64, or ValueError where one is negative or not finite."""
    w = _np(weights, np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("landmark weights must be finite and >= 0")
    return w


def uniform_laplacian(triangles: ArrayLike, n_vertices: int) -> sp.csr_matrix:
    """The uniform ("umbrella") Laplacian of eq. 2 as a (V, V) float64 CSR matrix.

    ``triangles`` (F, 3) int vertex indices (numpy or torch); ``n_vertices`` = V.
    Row i is ``e_i - (1/N_i) sum_{j in N(i)} e_j`` over the N_i distinct edge
    neighbours of vertex i, so ``(L @ V)[i] = v_i - mean of neighbours``
    (mm when V is in mm). A vertex in no triangle gets an all-zero row.
    """
    tris = _np(triangles, np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tris.shape}")
    if tris.size and (tris.min() < 0 or tris.max() >= n_vertices):
        raise ValueError(f"triangle indices out of range [0, {n_vertices})")
    i = np.concatenate([tris[:, 0], tris[:, 1], tris[:, 2]])
    j = np.concatenate([tris[:, 1], tris[:, 2], tris[:, 0]])
    adj = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    adj = adj + adj.T
    adj.data[:] = 1.0                      # duplicate edges (shared by two triangles) count once
    adj.setdiag(0.0)                       # degenerate triangles must not make self-loops
    adj.eliminate_zeros()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    has = (deg > 0).astype(np.float64)
    lap = sp.diags(has) - sp.diags(inv) @ adj
    return sp.csr_matrix(lap)


def anchor_matrix(tri_ids: ArrayLike, bary: ArrayLike, triangles: ArrayLike, n_vertices: int) -> sp.csr_matrix:
    """(K, V) anchor matrix from per-landmark triangles and barycentrics.

    ``tri_ids`` (K,) int triangle index per landmark (-1 = no correspondence:
    an all-zero row); ``bary`` (K, 3) barycentric weights of the triangle's
    corners ``triangles[tri_ids[k]]`` (F, 3). Row k of the result applied to
    (V, 3) vertices gives the landmark's surface point.
    """
    t = _np(tri_ids, np.int64).reshape(-1)
    b = _np(bary, np.float64).reshape(-1, 3)
    tris = _np(triangles, np.int64)
    k = t.shape[0]
    ok = t >= 0
    rows = np.repeat(np.arange(k)[ok], 3)
    cols = tris[t[ok]].reshape(-1)
    vals = b[ok].reshape(-1)
    return sp.csr_matrix((vals, (rows, cols)), shape=(k, n_vertices))


def deformation_energy(new_vertices: ArrayLike, vertices: ArrayLike, L: sp.spmatrix, S: sp.spmatrix,
                       targets: ArrayLike, weights: ArrayLike, alpha: float = 0.0) -> float:
    """Eq. 3 (plus ``alpha ||V' - V||^2``) for (V, 3) ``new_vertices`` V' against the input (V, 3) ``vertices`` V; mm^2."""
    vn = _np(new_vertices, np.float64)
    v = _np(vertices, np.float64)
    mu = _np(targets, np.float64)
    w = _np(weights, np.float64).reshape(-1)
    lap = L @ (vn - v)
    res = S @ vn - mu
    return float((lap ** 2).sum() + alpha * ((vn - v) ** 2).sum() + (w[:, None] * res ** 2).sum())


class DeformSolver:
    """The factorised normal equations of eq. 3 for one (L, S, w, fixed) combination.

    Build once, then :meth:`solve` for any input mesh and targets: the matrix
    ``L^T L + S^T W S`` does not depend on either, so re-linearised targets and
    a batch of meshes sharing the same correspondence reuse the factorisation.

    Args:
        L: (V, V) sparse Laplacian (:func:`uniform_laplacian`).
        S: (K, V) sparse anchor matrix (rows = barycentric combinations).
        weights: (K,) non-negative landmark weights (dimensionless, relative to
            the Laplacian term; multiply in any global factor before).
        fixed: optional (M,) vertex indices held exactly at their input
            position (hard constraints, eliminated from the unknowns).
        LtL: optional precomputed ``L.T @ L`` (saves ~10 ms per build).
        alpha: ``alpha`` >= 0 of the displacement prior ``alpha ||V' - V||^2`` (dimensionless,
            relative to the Laplacian term; 0: eq. 3 alone).
    """

    def __init__(self, L: sp.spmatrix, S: sp.spmatrix, weights: ArrayLike,
                 fixed: Optional[ArrayLike] = None, LtL: Optional[sp.spmatrix] = None, alpha: float = 0.0):
        n = L.shape[0]
        if L.shape != (n, n) or S.shape[1] != n:
            raise ValueError(f"L must be (V, V) and S (K, V); got {L.shape} and {S.shape}")
        w = _checked_weights(weights).reshape(-1)
        if w.shape[0] != S.shape[0]:
            raise ValueError(f"{w.shape[0]} weights for {S.shape[0]} anchor rows")
        self.n = n
        self.L = sp.csr_matrix(L, dtype=np.float64)
        self.S = sp.csr_matrix(S, dtype=np.float64)
        self.w = w
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        self.alpha = float(alpha)
        LtL = sp.csr_matrix(LtL if LtL is not None else self.L.T @ self.L)
        # the prior's matrix: L^T L + alpha I (the right-hand side applies it to the input mesh)
        self.LtL = (LtL + self.alpha * sp.identity(n, format="csr")).tocsr() if self.alpha > 0 else LtL
        self.StW = sp.csr_matrix(self.S.T @ sp.diags(w))
        A = (self.LtL + self.StW @ self.S).tocsr()

        fixed_mask = np.zeros(n, bool)
        if fixed is not None:
            fi = _np(fixed, np.int64).reshape(-1)
            if fi.size and (fi.min() < 0 or fi.max() >= n):
                raise ValueError(f"fixed vertex indices out of range [0, {n})")
            fixed_mask[fi] = True
        self.user_fixed = fixed_mask.copy()
        # Components with neither a weighted anchor nor a fixed vertex: hold in place (with alpha > 0
        # that is also their minimiser).
        pattern = (abs(self.L) + abs(self.L.T)).tocsr()
        n_comp, comp = csgraph.connected_components(pattern, directed=False)
        anchored = np.zeros(n_comp, bool)
        touched = np.asarray(abs(self.S[w > 0]).sum(axis=0)).ravel() > 0
        anchored[comp[touched | fixed_mask]] = True
        fixed_mask |= ~anchored[comp]
        self.fixed = fixed_mask
        self.free = np.flatnonzero(~fixed_mask)
        self.held = np.flatnonzero(fixed_mask)
        self.A_fc = A[self.free][:, self.held].tocsr()
        A_ff = A[self.free][:, self.free].tocsc()
        # A is symmetric positive definite on the free set, so LU needs no pivoting: a symmetric
        # minimum-degree ordering with diagonal pivots keeps the fill low (on the 9409-vertex ICT
        # face ~0.15 s to factorise vs ~2 s when SuperLU is left to pivot, which breaks the ordering).
        self._lu = _factorise_spd(A_ff) if self.free.size else None

    def solve(self, vertices: ArrayLike, targets: ArrayLike) -> np.ndarray:
        """(V, 3) input vertices (mm) and (K, 3) targets (mm, same frame) -> (V, 3) float64 V'."""
        v = _np(vertices, np.float64)
        mu = _np(targets, np.float64)
        if v.shape != (self.n, 3) or mu.shape != (self.S.shape[0], 3):
            raise ValueError(f"vertices must be ({self.n}, 3) and targets ({self.S.shape[0]}, 3); "
                             f"got {v.shape} and {mu.shape}")
        # Rows of unweighted (or invalid) landmarks may carry NaN targets: they must not leak in.
        mu = np.where(self.w[:, None] > 0, mu, 0.0)
        rhs = self.LtL @ v + self.StW @ mu
        out = v.copy()
        if self._lu is not None:
            b = rhs[self.free] - self.A_fc @ v[self.held]
            out[self.free] = self._lu.solve(np.ascontiguousarray(b))
        return out


def _factorise_spd(A: sp.spmatrix):
    """SuperLU of a sparse symmetric positive definite matrix without pivoting (see DeformSolver)."""
    return spla.splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                     options=dict(SymmetricMode=True))


class InfluenceSolver:
    """Eq. 3 with the displacement prior (``alpha`` > 0) for any landmark weights, batched, at the cost
    of one (K, K) dense solve per mesh instead of a sparse factorisation.

    The prior's matrix ``P = L^T L + alpha I`` is positive definite and does not depend on the weights.
    The displacement ``D = V' - V`` minimises ``||L D||^2 + alpha ||D||^2 + sum_k w_k ||S_k D - e_k||^2``
    with ``e = mu - S V`` (the landmark residuals, mm), so (push-through identity)

        D = Z (I + W C)^{-1} W e,    Z = P^{-1} S^T  (V, K),   C = S Z  (K, K),

    exactly :class:`DeformSolver`'s minimiser without fixed vertices (a component no weighted landmark
    touches has no column of Z there: it stays in place, as there). Column k of ``Z`` is landmark k's
    influence field, the shape a unit pull at that landmark gives the mesh. Building costs K sparse solves
    (about 1.4 s for the 9409-vertex ICT face and 478 landmarks on this 2-core machine, about twelve
    faces' factorisations), so it pays for batches and for repeated calls (a video's frames).

    Args:
        L: (V, V) sparse Laplacian; S: (K, V) sparse anchor matrix; alpha: > 0, dimensionless;
        LtL: optional precomputed ``L.T @ L``.
    """

    def __init__(self, L: sp.spmatrix, S: sp.spmatrix, alpha: float, LtL: Optional[sp.spmatrix] = None):
        n = L.shape[0]
        if L.shape != (n, n) or S.shape[1] != n:
            raise ValueError(f"L must be (V, V) and S (K, V); got {L.shape} and {S.shape}")
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"the influence solver needs the displacement prior: alpha > 0, got {alpha}")
        self.S = sp.csr_matrix(S, dtype=np.float64)
        LtL = sp.csr_matrix(LtL if LtL is not None else L.T @ L)
        lu = _factorise_spd(LtL + alpha * sp.identity(n, format="csr"))
        self.Z = lu.solve(np.ascontiguousarray(self.S.T.toarray()))      # (V, K)
        self.C = np.asarray(self.S @ self.Z)                             # (K, K), symmetric

    def displacement(self, weights: ArrayLike, residuals: ArrayLike) -> np.ndarray:
        """(B, K) non-negative weights and (B, K, 3) residuals ``mu - S V`` (mm; rows of weight 0 may hold
        anything finite or not) -> (B, V, 3) float64 displacement ``V' - V``, mm."""
        w = _checked_weights(weights)
        e = _np(residuals, np.float64)
        k = self.C.shape[0]
        if w.ndim != 2 or w.shape[1] != k or e.shape != w.shape + (3,):
            raise ValueError(f"weights must be (B, {k}) and residuals (B, {k}, 3); got {w.shape} and {e.shape}")
        sw = np.sqrt(w)
        e = np.where(w[..., None] > 0, e, 0.0)
        # the symmetric form I + W^1/2 C W^1/2 (positive definite) of I + W C
        m = np.eye(k) + sw[:, :, None] * self.C[None] * sw[:, None, :]
        u = sw[..., None] * np.linalg.solve(m, sw[..., None] * e)      # (B, K, 3)
        b = len(u)
        return (self.Z @ u.transpose(1, 0, 2).reshape(k, 3 * b)).reshape(-1, b, 3).transpose(1, 0, 2)


def _as_output(x: np.ndarray, like: ArrayLike):
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(x).to(dtype=like.dtype, device=like.device)
    return x


def deform(vertices: ArrayLike, L: sp.spmatrix, S: sp.spmatrix, targets: ArrayLike, weights: ArrayLike,
           fixed: Optional[ArrayLike] = None, alpha: float = 0.0) -> ArrayLike:
    """Minimise eq. 3: one sparse least-squares solve. See :class:`DeformSolver`.

    ``vertices`` (V, 3) mm (numpy or torch), ``L`` (V, V), ``S`` (K, V),
    ``targets`` (K, 3) mm in the frame of ``vertices``, ``weights`` (K,),
    ``fixed`` optional (M,) vertex indices kept exactly in place, ``alpha`` the displacement prior. Returns the
    (V, 3) deformed vertices, same type (and torch dtype/device) as ``vertices``.
    """
    return _as_output(DeformSolver(L, S, weights, fixed, alpha=alpha).solve(vertices, targets), vertices)


def deform_batch(vertices: ArrayLike, L: sp.spmatrix, S: Union[sp.spmatrix, Sequence[sp.spmatrix]],
                 targets: ArrayLike, weights: ArrayLike, fixed: Optional[ArrayLike] = None) -> ArrayLike:
    """Batched :func:`deform`: (B, V, 3) vertices, (B, K, 3) targets -> (B, V, 3).

    ``S`` is one (K, V) matrix shared by the batch or a sequence of B of them;
    ``weights`` (K,) or (B, K). The factorisation is reused for consecutive
    items whose anchor matrix and weights are identical.
    """
    v = _np(vertices, np.float64)
    mu = _np(targets, np.float64)
    b = v.shape[0]
    w = _np(weights, np.float64)
    ws = np.broadcast_to(w, (b, w.shape[-1]))
    Ss = [S] * b if sp.issparse(S) else list(S)
    if len(Ss) != b or mu.shape[0] != b:
        raise ValueError("S, targets and vertices must have the same batch size")
    LtL = sp.csr_matrix(L.T @ L)
    out = np.empty_like(v)
    solver, key = None, None
    for i in range(b):
        if solver is None or not _same(key, (Ss[i], ws[i])):
            solver = DeformSolver(L, Ss[i], ws[i], fixed, LtL=LtL)
            key = (Ss[i], ws[i])
        out[i] = solver.solve(v[i], mu[i])
    return _as_output(out, vertices)


def _same(key, new) -> bool:
    (s0, w0), (s1, w1) = key, new
    if not np.array_equal(w0, w1):
        return False
    if s0 is s1:
        return True
    return s0.shape == s1.shape and (s0 != s1).nnz == 0
