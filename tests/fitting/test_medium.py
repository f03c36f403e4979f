"""Medium stage on the ICT mean face in a synthetic camera.

The mean face (mm) is placed in front of a pinhole camera (fx = fy = 1500 px,
cx = cy = 256 px) by X_cam = X + (0, 0, -600) mm; it faces the camera. About 100
surface points spread over the front of the face act as landmarks (half at
triangle corners, half at interior barycentrics); their projections are moved
by a known smooth 2D displacement of a few pixels and the stage must follow.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from fitting.stages.laplacian import anchor_matrix, deform, deformation_energy, uniform_laplacian
from fitting.stages.medium import (MediumSettings, count_flipped_triangles, index_map_correspondence,
                            landmark_targets, max_laplacian_change, medium_fixed_vertices, deform_to_landmarks,
                            unfold_flips)
from sfs.projection import camera_to_pixel

K_CAM = torch.tensor([[1500.0, 1500.0, 256.0, 256.0]], dtype=torch.float64)
# The scene tests check eq. 3 itself (the machinery): the displacement prior off.
EQ3 = MediumSettings(displacement_prior_mm=float("inf"))
T_CAM = torch.tensor([0.0, 0.0, -600.0], dtype=torch.float64)
N_LANDMARKS = 100


@pytest.fixture(scope="module")
def scene(face_model):
    verts = face_model.mean.double()
    tris = face_model.triangles.long()
    n = verts.shape[0]
    v_cam = (verts + T_CAM)[None].float()                                          # (1, V, 3)
    # Landmarks: farthest-point sample of front-facing triangles of the narrow face region.
    face = torch.isin(tris, face_model.vertex_sets["face_narrow"]).all(1)
    normals = torch.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]], dim=1)
    cand = torch.nonzero(face & (normals[:, 2] > 0)).squeeze(1).numpy()
    centres = verts[tris].mean(1).numpy()
    sel = [cand[0]]
    dist = np.linalg.norm(centres[cand] - centres[cand[0]], axis=1)
    for _ in range(N_LANDMARKS - 1):                                                 # loop over landmarks, test setup
        nxt = cand[np.argmax(dist)]
        sel.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centres[cand] - centres[nxt], axis=1))
    tri = torch.tensor(sel, dtype=torch.int64)
    rng = np.random.default_rng(0)
    bary = np.tile([1.0, 0.0, 0.0], (N_LANDMARKS, 1))
    bary[1::2] = rng.dirichlet([3, 3, 3], N_LANDMARKS)[1::2]                       # genuine interior points
    bary = torch.from_numpy(bary)
    S = anchor_matrix(tri, bary, tris, n)
    uv0 = camera_to_pixel(torch.from_numpy(S @ v_cam[0].double().numpy())[None], K_CAM)[..., :2]
    return dict(v_cam=v_cam, tris=tris, n=n, tri=tri, bary=bary, S=S, uv0=uv0,
                L=uniform_laplacian(tris, n), weights=torch.full((N_LANDMARKS,), 0.6, dtype=torch.float64))


def smooth_shift(uv: torch.Tensor) -> torch.Tensor:
    """A smooth field of up to ~3.6 px over the whole face."""
    u, v = uv[..., 0] - 256, uv[..., 1] - 256
    return torch.stack([3.0 * torch.sin(2 * np.pi * v / 300), 2.0 * torch.cos(2 * np.pi * u / 300)], -1)


def local_shift(uv: torch.Tensor, centre: torch.Tensor, amp=(4.0, -3.0), sigma=25.0) -> torch.Tensor:
    g = torch.exp(-((uv - centre) ** 2).sum(-1) / (2 * sigma ** 2))
    return g[..., None] * torch.tensor(amp, dtype=uv.dtype)


def test_settings_defaults_and_validation():
    s = MediumSettings()
    w = s.landmark_weights()
    from landmarks.indices import GROUP_NAMES, point_groups
    g = point_groups()
    assert w.shape == (478,)
    assert np.all(w[g == GROUP_NAMES.index("eyes")] == pytest.approx(0.055))
    assert np.all(w[g == GROUP_NAMES.index("brows")] == pytest.approx(0.085))
    assert np.all(w[g == GROUP_NAMES.index("mouth")] == pytest.approx(0.1))
    for group in ("iris", "nose", "contour", "other"):  # measured: no shape in their residual
        assert np.all(w[g == GROUP_NAMES.index(group)] == 0)
    assert s.alpha == pytest.approx((0.109 / 0.634) ** 2)
    assert MediumSettings(displacement_prior_mm=float("inf")).alpha == 0.0
    with pytest.raises(ValueError):
        MediumSettings(correspondence="nearest")
    with pytest.raises(ValueError):
        MediumSettings(iterations=0)


def test_landmark_targets_project_to_uv_at_current_depth():
    rng = torch.Generator().manual_seed(0)
    pts = torch.randn(2, 7, 3, generator=rng, dtype=torch.float64) * 30 + torch.tensor([0, 0, -500.0])
    k = torch.tensor([[1500.0, 1400.0, 256.0, 240.0], [800.0, 800.0, 100.0, 120.0]], dtype=torch.float64)
    uv = torch.rand(2, 7, 2, generator=rng, dtype=torch.float64) * 400
    mu = landmark_targets(uv, pts, k)
    back = camera_to_pixel(mu, k)
    torch.testing.assert_close(back[..., :2], uv)
    torch.testing.assert_close(back[..., 2], -pts[..., 2])


def test_index_map_correspondence_reads_pixel_under_landmark():
    tri_id = torch.full((2, 4, 5), -1, dtype=torch.int64)
    bary = torch.zeros(2, 4, 5, 3)
    tri_id[0, 1, 2] = 17
    bary[0, 1, 2] = torch.tensor([0.2, 0.3, 0.5])
    tri_id[1, 3, 4] = 5
    bary[1, 3, 4] = torch.tensor([1.0, 0.0, 0.0])
    uv = torch.tensor([[[2.9, 1.1], [0.5, 0.5], [-0.2, 1.5], [float("nan"), 1.0]],
                       [[4.5, 3.99], [5.0, 3.5], [4.5, 4.0], [2.0, 1.0]]])
    tri, bc, valid = index_map_correspondence(tri_id, bary, uv)
    assert tri.dtype == torch.int64 and tri.shape == (2, 4) and bc.shape == (2, 4, 3)
    assert valid.tolist() == [[True, False, False, False], [True, False, False, False]]
    assert tri.tolist() == [[17, -1, -1, -1], [5, -1, -1, -1]]
    torch.testing.assert_close(bc[0, 0], torch.tensor([0.2, 0.3, 0.5]))
    torch.testing.assert_close(bc[1, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert (bc[~valid] == 0).all()


def test_smooth_displacement_is_followed_without_damage(scene):
    uv_t = scene["uv0"] + smooth_shift(scene["uv0"])
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, scene["tri"], scene["bary"], scene["weights"],
                              settings=EQ3)
    before, after = res.reprojection_before.item(), res.reprojection_after.item()
    assert before > 1.5                                         # the shift is real
    assert after <= 0.5 * before, (before, after)
    assert res.n_landmarks.item() == N_LANDMARKS
    out = res.vertices_cam[0]
    assert out.dtype == torch.float32 and out.shape == scene["v_cam"][0].shape
    v0 = scene["v_cam"][0]
    assert count_flipped_triangles(v0, out, scene["tris"]) == 0
    lap = max_laplacian_change(v0, out, scene["L"])
    assert lap < 0.2                                            # mm; measured 0.058 mm
    assert lap == pytest.approx(res.max_laplacian_change.item(), rel=1e-3, abs=1e-5)
    moved = (out - v0).norm(dim=-1)
    assert 0.3 < moved.max() < 5.0                              # a few px at 600 mm ~ 1-2 mm


def test_local_displacement_leaves_far_vertices(scene):
    # Move only the landmarks around one cheek; the others hold their place.
    uv0 = scene["uv0"]
    centre = uv0[0, 10]
    shift = local_shift(uv0, centre)
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv0 + shift, scene["tri"], scene["bary"],
                     scene["weights"], settings=EQ3)
    assert res.reprojection_after.item() <= 0.5 * res.reprojection_before.item()
    v0 = scene["v_cam"][0].double()
    moved = (res.vertices_cam[0].double() - v0).norm(dim=-1)
    lm_pts = torch.from_numpy(scene["S"] @ v0.numpy())
    driven = lm_pts[shift[0].norm(dim=-1) > 0.05]                  # landmarks that were really moved
    dist = torch.cdist(v0, driven).min(1).values
    near, far = moved[dist < 10].max(), moved[dist > 60]
    assert near > 0.5                                               # mm
    assert far.numel() > 1000
    # measured: near 1.75 mm, far max 0.0095 mm, far median 2e-5 mm
    assert far.max() < 0.03 * near, (far.max().item(), near.item())
    assert far.median() < 1e-3                                      # mm


def test_weight_scale_trades_landmarks_against_shape(scene):
    uv_t = scene["uv0"] + smooth_shift(scene["uv0"])
    errs, laps = [], []
    for scale in (0.1, 1.0, 10.0):
        res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, scene["tri"], scene["bary"],
                         scene["weights"], settings=dataclasses.replace(EQ3, weight_scale=scale))
        errs.append(res.reprojection_after.item())
        laps.append(res.max_laplacian_change.item())
    assert errs[0] > errs[1] > errs[2]
    assert laps[0] < laps[2]


def test_displacement_prior_prices_a_smooth_warp(scene):
    """Eq. 3 alone meets a smooth shift of the landmarks at any weight (a smooth warp costs nothing), so
    scaling the weights (the fusion's trust does) changes little; with the displacement prior the move
    follows the weight."""
    uv_t = scene["uv0"] + smooth_shift(scene["uv0"])
    moved = {}
    for name, base in (("eq3", EQ3), ("prior", MediumSettings())):
        for scale in (0.05, 1.0):
            res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, scene["tri"], scene["bary"],
                                      scene["weights"], settings=dataclasses.replace(base, weight_scale=scale))
            moved[name, scale] = float((res.vertices_cam[0] - scene["v_cam"][0]).norm(dim=-1).max())
    assert moved["eq3", 0.05] > 0.7 * moved["eq3", 1.0]
    assert moved["prior", 1.0] < moved["eq3", 1.0]
    assert moved["prior", 0.05] < 0.5 * moved["prior", 1.0], moved


def test_zero_displacement_keeps_mesh(scene):
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, scene["uv0"], scene["tri"], scene["bary"],
                     scene["weights"], settings=EQ3)
    assert (res.vertices_cam - scene["v_cam"]).abs().max() < 1e-4
    assert res.reprojection_after.item() < 1e-4


def test_solution_minimises_eq3(scene):
    """With one iteration the targets are fixed by the input: check the energy directly."""
    uv_t = scene["uv0"] + smooth_shift(scene["uv0"])
    s = dataclasses.replace(EQ3, iterations=1)
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, scene["tri"], scene["bary"],
                     scene["weights"], settings=s)
    v0 = scene["v_cam"][0].double().numpy()
    S, L, w = scene["S"], scene["L"], scene["weights"].numpy()
    mu = landmark_targets(uv_t, torch.from_numpy(S @ v0)[None], K_CAM)[0].numpy()
    sol = deform(v0, L, S, mu, w)                                   # float64 solution
    np.testing.assert_allclose(res.vertices_cam[0].numpy(), sol, atol=1e-3)
    e_sol = deformation_energy(sol, v0, L, S, mu, w)
    assert e_sol < deformation_energy(v0, v0, L, S, mu, w)
    rng = np.random.default_rng(1)
    for _ in range(10):
        assert deformation_energy(sol + rng.normal(scale=1e-2, size=sol.shape), v0, L, S, mu, w) > e_sol
        d = np.zeros_like(sol)                                      # local perturbation near a landmark
        d[scene["tris"][scene["tri"][0]].numpy()] = rng.normal(scale=1e-3, size=(3, 3))
        assert deformation_energy(sol + d, v0, L, S, mu, w) > e_sol


def test_fixed_vertices_do_not_move(scene, face_model):
    fixed = medium_fixed_vertices(face_model, MediumSettings(fix_rigid=True))
    assert medium_fixed_vertices(face_model, MediumSettings()) is None
    rigid = face_model.vertex_sets["rigid"]
    assert 0 < fixed.numel() < rigid.numel()                       # chin vertices in the face are left free
    assert not torch.isin(fixed, face_model.vertex_sets["face_narrow"]).any()
    extra = scene["tris"][scene["tri"][:5], 1]                      # and some vertices right at landmarks
    fixed = torch.cat([fixed, extra])
    uv_t = scene["uv0"] + smooth_shift(scene["uv0"])
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, scene["tri"], scene["bary"],
                     scene["weights"], fixed_vertices=fixed, settings=EQ3)
    assert torch.equal(res.vertices_cam[0, fixed], scene["v_cam"][0, fixed])
    assert (res.vertices_cam - scene["v_cam"]).abs().max() > 0.3
    assert res.reprojection_after.item() < res.reprojection_before.item()


def test_batch_matches_single_calls(scene):
    v1 = scene["v_cam"][0]
    v2 = v1 + torch.tensor([5.0, -3.0, -40.0])
    k2 = torch.tensor([[1200.0, 1250.0, 250.0, 262.0]], dtype=torch.float64)
    uv2 = camera_to_pixel(torch.from_numpy(scene["S"] @ v2.double().numpy())[None], k2)[..., :2]
    uv_a = scene["uv0"] + smooth_shift(scene["uv0"])
    uv_b = uv2 + local_shift(uv2, uv2[0, 3])
    args = (scene["tris"],)
    res = deform_to_landmarks(torch.stack([v1, v2]), *args, torch.cat([K_CAM, k2]), torch.cat([uv_a, uv_b]),
                     scene["tri"], scene["bary"], scene["weights"])
    r1 = deform_to_landmarks(v1[None], *args, K_CAM, uv_a, scene["tri"][None], scene["bary"][None], scene["weights"][None])
    r2 = deform_to_landmarks(v2[None], *args, k2, uv_b, scene["tri"], scene["bary"], scene["weights"])
    torch.testing.assert_close(res.vertices_cam[0], r1.vertices_cam[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(res.vertices_cam[1], r2.vertices_cam[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(res.reprojection_after, torch.cat([r1.reprojection_after, r2.reprojection_after]))
    assert res.reprojection_before.shape == (2,)


def test_influence_fields_give_the_per_face_solves(scene, monkeypatch):
    """A batch through the landmarks' influence fields (built once the process has had INFLUENCE_MIN_FACES
    faces, then kept) gives the same meshes as each face's own factorisation: different weights, cameras and targets,
    a missing landmark, the displacement prior on (the default)."""
    from fitting.stages import medium
    v1 = scene["v_cam"][0].double()
    v2 = v1 + torch.tensor([5.0, -3.0, -40.0], dtype=torch.float64)
    k2 = torch.tensor([[1200.0, 1250.0, 250.0, 262.0]], dtype=torch.float64)
    uv2 = camera_to_pixel(torch.from_numpy(scene["S"] @ v2.numpy())[None], k2)[..., :2]
    uv = torch.cat([scene["uv0"] + smooth_shift(scene["uv0"]), uv2 + local_shift(uv2, uv2[0, 3])])
    uv[1, 7] = float("nan")
    w = torch.stack([scene["weights"], scene["weights"] * torch.linspace(0.2, 3.0, N_LANDMARKS, dtype=torch.float64)])
    args = (torch.stack([v1, v2]), scene["tris"], torch.cat([K_CAM, k2]), uv, scene["tri"], scene["bary"], w)
    monkeypatch.setattr(medium, "_influence_cache", {})
    monkeypatch.setattr(medium, "_faces_factorised", {})
    monkeypatch.setattr(medium, "INFLUENCE_MIN_FACES", 3)
    one_by_one = deform_to_landmarks(*args)
    assert not medium._influence_cache  # two faces so far: each factorised
    fields = deform_to_landmarks(*args)  # four: the fields are built
    assert len(medium._influence_cache) == 1
    torch.testing.assert_close(fields.vertices_cam, one_by_one.vertices_cam, atol=1e-8, rtol=0)
    torch.testing.assert_close(fields.reprojection_after, one_by_one.reprojection_after)
    assert (fields.vertices_cam - args[0]).abs().max() > 0.1
    monkeypatch.setattr(medium, "INFLUENCE_MIN_FACES", 10 ** 6)  # kept: a later single face uses them too
    single = deform_to_landmarks(*(a[:1] if a.shape[0] == 2 else a for a in args))
    torch.testing.assert_close(single.vertices_cam[0], one_by_one.vertices_cam[0], atol=1e-8, rtol=0)


def test_missing_landmarks_are_ignored(scene):
    uv_t = (scene["uv0"] + smooth_shift(scene["uv0"])).clone()
    uv_t[0, :10] = float("nan")
    tri = scene["tri"].clone()
    tri[10:15] = -1
    res = deform_to_landmarks(scene["v_cam"], scene["tris"], K_CAM, uv_t, tri, scene["bary"], scene["weights"],
                              settings=EQ3)
    assert res.n_landmarks.item() == N_LANDMARKS - 15
    assert torch.isfinite(res.vertices_cam).all()
    assert res.reprojection_after.item() <= 0.5 * res.reprojection_before.item()


def test_flip_and_laplacian_helpers_on_known_cases():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]])
    t = np.array([[0, 1, 2], [1, 3, 2]])
    w = v.copy()
    w[3] = [-0.5, -0.5, 0.0]                                        # fold the second triangle over
    assert count_flipped_triangles(v, w, t) == 1
    assert count_flipped_triangles(v, v, t) == 0
    assert count_flipped_triangles(np.stack([v, v]), np.stack([v, w]), t).tolist() == [0, 1]
    L = uniform_laplacian(t, 4)
    u = v.copy()
    u[0, 2] = 3.0                                                   # vertex 0 has neighbours 1, 2
    # L(u - v): row 0 -> 3; rows 1, 2 (3 neighbours each) -> -1; row 3 untouched.
    assert max_laplacian_change(v, u, L) == pytest.approx(3.0)


def test_timing_full_face(scene, face_model):
    """Measured, not asserted: the stage on 9409 vertices with all 478 landmark weights."""
    rng = np.random.default_rng(3)
    tris = scene["tris"]
    tri = torch.from_numpy(rng.choice(tris.shape[0], 478, replace=False))
    bary = torch.from_numpy(rng.dirichlet([2, 2, 2], 478))
    S = anchor_matrix(tri, bary, tris, scene["n"])
    uv = camera_to_pixel(torch.from_numpy(S @ scene["v_cam"][0].double().numpy())[None], K_CAM)[..., :2]
    uv = uv + smooth_shift(uv)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = deform_to_landmarks(scene["v_cam"], tris, K_CAM, uv, tri, bary, None)
        times.append(time.perf_counter() - t0)
    print(f"\nmedium stage, V={scene['n']}, K=478, iterations=2: "
          f"{min(times) * 1000:.0f} ms best of 3 (reported {res.seconds * 1000:.0f} ms), "
          f"reprojection {res.reprojection_before.item():.2f} -> {res.reprojection_after.item():.3f} px")
    assert res.reprojection_after.item() < res.reprojection_before.item()


def test_unfold_flips_removes_a_fold_and_leaves_the_rest(face_model):
    """A vertex dragged 4 mm sideways across its one-ring folds triangles over; unfolding removes every
    flip and touches only the vertices near the fold."""
    v0 = face_model.mean.double().numpy()
    tris = face_model.triangles.long().numpy()
    L = uniform_laplacian(tris, len(v0))
    ring = (L != 0).astype(np.float64).tocsr()
    tip = int(np.argmax(v0[:, 2]))                                  # nose tip
    bumped = v0.copy()
    bumped += np.exp(-np.linalg.norm(v0 - v0[tip], axis=1) ** 2 / (2 * 8.0 ** 2))[:, None] * [0.5, 0.0, 0.0]
    bumped[tip] += [4.0, 0.0, 0.0]                                  # the fold
    assert count_flipped_triangles(v0, bumped, tris) > 0
    out = unfold_flips(v0, bumped, tris, ring, 12)
    assert count_flipped_triangles(v0, out, tris) == 0
    moved = np.linalg.norm(out - bumped, axis=1) > 0
    assert moved[tip]
    # only the fold's neighbourhood moves: the flipped triangles touch the tip's one-ring, and the
    # fade spreads 6 rings from their vertices, so nothing beyond 8 rings of the tip
    near = np.zeros(len(v0))
    near[tip] = 1.0
    for _ in range(8):
        near = ring @ near
    assert not moved[near == 0].any()
    assert moved.sum() < 0.02 * len(v0)


def test_unfold_flips_is_a_no_op_without_flips(face_model):
    v0 = face_model.mean.double().numpy()
    tris = face_model.triangles.long().numpy()
    ring = (uniform_laplacian(tris, len(v0)) != 0).astype(np.float64).tocsr()
    moved = v0 + [0.0, 0.0, 1.0]
    np.testing.assert_array_equal(unfold_flips(v0, moved, tris, ring, 12), moved)


def test_landmark_facing_is_the_cosine_to_the_camera():
    """A plane facing the camera gives 1 at every landmark; turned by 60 degrees about y, cos 60 = 0.5
    (up to the perspective of the ray to each point); turned away, 0."""
    import math

    from fitting.stages.correspondence import Correspondence
    from fitting.stages.medium import landmark_facing
    # a 3x3 grid of vertices, two triangles per cell, counter-clockwise seen from +z
    xs, ys = torch.meshgrid(torch.linspace(-10, 10, 3), torch.linspace(-10, 10, 3), indexing="xy")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.zeros(9)], -1)
    idx = torch.arange(9).reshape(3, 3)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    tris = torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])
    corr = Correspondence(vertex_ids=tris[:2], bary=torch.full((2, 3), 1 / 3), valid=torch.ones(2, dtype=torch.bool))
    far = torch.tensor([0.0, 0.0, -1000.0])
    for angle, expected in ((0.0, 1.0), (60.0, 0.5), (120.0, 0.0)):
        t = math.radians(angle)
        rot = torch.tensor([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
        facing = landmark_facing((grid @ rot.T + far)[None], tris, corr)
        assert facing.shape == (1, 2)
        torch.testing.assert_close(facing, torch.full((1, 2), expected), atol=0.02, rtol=0)
