"""Uniform Laplacian (eq. 2) and the eq. 3 least-squares deformation on small hand-made meshes."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitting.stages.laplacian import (DeformSolver, InfluenceSolver, anchor_matrix, deform, deform_batch,
                                      deformation_energy, uniform_laplacian)


def grid_mesh(n: int = 8, spacing: float = 2.0):
    """An n x n vertex grid in the z = 0 plane (mm), two CCW triangles per cell."""
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    verts = np.stack([xs.ravel() * spacing, ys.ravel() * spacing, np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return verts, tris


def test_laplacian_rows_are_vertex_minus_neighbour_mean():
    # Two triangles sharing edge 1-2, plus an isolated vertex 4.
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    L = uniform_laplacian(tris, 5)
    assert isinstance(L, sp.csr_matrix) and L.shape == (5, 5)
    v = np.random.default_rng(0).normal(size=(5, 3))
    Lv = L @ v
    np.testing.assert_allclose(Lv[0], v[0] - (v[1] + v[2]) / 2)
    np.testing.assert_allclose(Lv[1], v[1] - (v[0] + v[2] + v[3]) / 3)   # shared edge counted once
    np.testing.assert_allclose(Lv[3], v[3] - (v[1] + v[2]) / 2)
    assert L[4].nnz == 0                                                    # isolated: zero row
    np.testing.assert_allclose(np.asarray(L.sum(axis=1)).ravel(), 0, atol=1e-12)


def test_laplacian_vanishes_on_linear_field_inside_grid():
    v, t = grid_mesh(6)
    L = uniform_laplacian(torch.from_numpy(t), len(v))
    field = v @ np.array([[0.3, 1.0, -2.0], [0.7, 0.1, 0.5], [0, 0, 0]]) + 5.0
    lf = L @ field
    interior = np.flatnonzero((v[:, 0] > 0) & (v[:, 0] < 10) & (v[:, 1] > 0) & (v[:, 1] < 10))
    np.testing.assert_allclose(lf[interior], 0, atol=1e-12)
    assert np.abs(lf).max() > 0.1          # but not on the boundary: it is not the zero matrix


def test_laplacian_rejects_bad_indices():
    with pytest.raises(ValueError):
        uniform_laplacian(np.array([[0, 1, 5]]), 4)


def test_anchor_matrix_rows_are_barycentric_points():
    v, t = grid_mesh(4)
    S = anchor_matrix(np.array([3, -1, 0]), np.array([[0.2, 0.3, 0.5], [1, 0, 0], [1, 0, 0]]), t, len(v))
    p = S @ v
    np.testing.assert_allclose(p[0], 0.2 * v[t[3, 0]] + 0.3 * v[t[3, 1]] + 0.5 * v[t[3, 2]])
    np.testing.assert_allclose(p[1], 0)                      # invalid correspondence: empty row
    np.testing.assert_allclose(p[2], v[t[0, 0]])


def _problem(seed=0, n=8, k=6):
    rng = np.random.default_rng(seed)
    v, t = grid_mesh(n)
    v[:, 2] = np.sin(v[:, 0] / 5) * 2                        # not flat, so L v != 0 inside
    L = uniform_laplacian(t, len(v))
    tri = rng.choice(len(t), k, replace=False)
    bary = rng.dirichlet([1, 1, 1], k)
    S = anchor_matrix(tri, bary, t, len(v))
    mu = S @ v + rng.normal(scale=0.5, size=(k, 3))
    w = rng.uniform(0.1, 1.0, k)
    return v, t, L, S, mu, w


def test_deform_matches_dense_least_squares():
    v, t, L, S, mu, w = _problem()
    out = deform(v, L, S, mu, w)
    # Stacked least squares [L; sqrt(W) S] v' ~ [L v; sqrt(W) mu], solved densely.
    A = np.vstack([L.toarray(), np.sqrt(w)[:, None] * S.toarray()])
    b = np.vstack([L @ v, np.sqrt(w)[:, None] * mu])
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(out, ref, atol=1e-8)
    assert np.abs(out - v).max() > 0.05                      # the targets did move it


def test_deform_is_energy_minimum():
    v, t, L, S, mu, w = _problem(1)
    out = deform(v, L, S, mu, w)
    e = deformation_energy(out, v, L, S, mu, w)
    assert e <= deformation_energy(v, v, L, S, mu, w)
    rng = np.random.default_rng(2)
    for _ in range(20):
        d = rng.normal(size=v.shape) * 1e-3
        assert deformation_energy(out + d, v, L, S, mu, w) > e
    # Gradient of eq. 3 at the solution is zero.
    grad = 2 * (L.T @ (L @ (out - v))) + 2 * S.T @ (w[:, None] * (S @ out - mu))
    assert np.abs(grad).max() < 1e-8


def test_displacement_prior_matches_dense_least_squares_and_shrinks_the_warp():
    v, t, L, S, mu, w = _problem(4)
    alpha = 0.05
    out = deform(v, L, S, mu, w, alpha=alpha)
    # Stacked least squares [L; sqrt(alpha) I; sqrt(W) S] v' ~ [L v; sqrt(alpha) v; sqrt(W) mu].
    n = v.shape[0]
    A = np.vstack([L.toarray(), np.sqrt(alpha) * np.eye(n), np.sqrt(w)[:, None] * S.toarray()])
    b = np.vstack([L @ v, np.sqrt(alpha) * v, np.sqrt(w)[:, None] * mu])
    np.testing.assert_allclose(out, np.linalg.lstsq(A, b, rcond=None)[0], atol=1e-8)
    free = deform(v, L, S, mu, w)
    assert 0 < np.abs(out - v).max() < np.abs(free - v).max()  # the prior prices the warp
    e = deformation_energy(out, v, L, S, mu, w, alpha)
    assert e <= deformation_energy(free, v, L, S, mu, w, alpha)
    with pytest.raises(ValueError):
        DeformSolver(L, S, w, alpha=-1.0)


def test_zero_displacement_keeps_mesh_and_torch_roundtrip():
    v, t, L, S, mu, w = _problem(3)
    vt = torch.from_numpy(v).float()
    out = deform(vt, L, S, S @ v, w)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == vt.shape
    assert (out - vt).abs().max() < 1e-4


def test_fixed_vertices_are_hard_constraints():
    v, t, L, S, mu, w = _problem(4)
    fixed = np.arange(0, 64, 9)
    out = deform(v, L, S, mu * 0 + 30.0, w * 100, fixed=fixed)
    np.testing.assert_array_equal(out[fixed], v[fixed])
    assert np.abs(out - v).max() > 1.0


def test_unanchored_component_stays_in_place():
    v, t, L0, S0, mu, w = _problem(5)
    # Add a second, disconnected triangle and an isolated vertex: no landmark touches them.
    n = len(v)
    v2 = np.vstack([v, [[50, 0, 0], [51, 0, 0], [50, 1, 0], [60, 60, 60]]])
    t2 = np.vstack([t, [[n, n + 1, n + 2]]])
    L = uniform_laplacian(t2, n + 4)
    S = sp.hstack([S0, sp.csr_matrix((S0.shape[0], 4))]).tocsr()
    solver = DeformSolver(L, S, w)
    out = solver.solve(v2, mu)
    np.testing.assert_array_equal(out[n:], v2[n:])
    np.testing.assert_allclose(out[:n], deform(v, L0, S0, mu, w), atol=1e-9)


def test_zero_weight_rows_ignore_nan_targets():
    v, t, L, S, mu, w = _problem(6)
    w2, mu2 = w.copy(), mu.copy()
    w2[0], mu2[0] = 0.0, np.nan
    out = deform(v, L, S, mu2, w2)
    assert np.isfinite(out).all()


def test_batch_equals_single_calls():
    v, t, L, S, mu, w = _problem(7)
    rng = np.random.default_rng(8)
    vb = np.stack([v, v + rng.normal(scale=0.1, size=v.shape)])
    mub = np.stack([mu, mu + 1.0])
    out = deform_batch(vb, L, S, mub, w)
    for i in range(2):
        np.testing.assert_allclose(out[i], deform(vb[i], L, S, mub[i], w), atol=1e-10)
    # Different anchors / weights per item.
    S2 = anchor_matrix(np.array([1, 2, 3, 4, 5, 6]), np.tile([1.0, 0, 0], (6, 1)), t, len(v))
    wb = np.stack([w, w * 2])
    out2 = deform_batch(vb, L, [S, S2], mub, wb)
    np.testing.assert_allclose(out2[1], deform(vb[1], L, S2, mub[1], w * 2), atol=1e-10)
    np.testing.assert_allclose(out2[0], out[0], atol=1e-10)


def test_influence_solver_equals_the_factorised_minimiser():
    """The influence fields give DeformSolver's minimiser (with the displacement prior) for any weights, in a
    batch: a zero-weight row with a NaN target, and a component no landmark touches, which stays in place."""
    v, t, L0, S0, mu, w = _problem(9)
    n = len(v)
    v2 = np.vstack([v, [[50, 0, 0], [51, 0, 0], [50, 1, 0]]])
    t2 = np.vstack([t, [[n, n + 1, n + 2]]])
    L = uniform_laplacian(t2, n + 3)
    S = sp.hstack([S0, sp.csr_matrix((S0.shape[0], 3))]).tocsr()
    alpha = 0.03
    solver = InfluenceSolver(L, S, alpha)
    w2, mu2 = w * 3.0, mu + 0.7
    w2[1], mu2[1] = 0.0, np.nan
    d = solver.displacement(np.stack([w, w2]), np.stack([mu - S @ v2, mu2 - S @ v2]))
    assert d.shape == (2, n + 3, 3)
    np.testing.assert_allclose(v2 + d[0], DeformSolver(L, S, w, alpha=alpha).solve(v2, mu), atol=1e-9)
    np.testing.assert_allclose(v2 + d[1], DeformSolver(L, S, w2, alpha=alpha).solve(v2, mu2), atol=1e-9)
    assert np.abs(d[:, :n]).max() > 0.05 and not d[:, n:].any()
    with pytest.raises(ValueError, match="alpha > 0"):
        InfluenceSolver(L, S, 0.0)
    with pytest.raises(ValueError):
        solver.displacement(w[None], (mu - S @ v2)[None, :-1])
