"""The head-scan bench: the scan loader, the MICC-style protocol on known cases, the uniform look, and a smoke run.

The protocol tests build the reference without MediaPipe (a fixed scale, the
origin at the scan's most forward vertex, the nose tip) and compare the scan
with copies of itself whose answer is known.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fitting.bench.scan_protocol import (CROP_RADIUS_MM, INTERCANTHAL_MM, ScanReference, compare_with_scan,
                                         default_scan_path, landmark_alignment, load_scan, open_edges,
                                         scale_from_landmarks)

# The scale the bench finds (MediaPipe's inner eye corners at 32 mm): 48.5 mm per scan unit.
MM_PER_UNIT = 48.5


@pytest.fixture(scope="module")
def scan():
    if not default_scan_path().is_file():
        pytest.fail(f"the head scan is missing: expected {default_scan_path()}")
    return load_scan()


N_LANDMARKS = 40


def _landmark_ids(ref: ScanReference) -> np.ndarray:
    """The scored vertices that stand in for landmarks in these tests."""
    return np.random.default_rng(0).choice(np.nonzero(ref.scored)[0], N_LANDMARKS, replace=False)


@pytest.fixture(scope="module")
def reference(scan):
    """The scan in mm, origin at its most forward vertex, with 40 scored vertices as its landmarks."""
    ref = ScanReference.from_scan(scan, MM_PER_UNIT, scan.vertices[np.argmax(scan.vertices[:, 2])])
    ref.landmarks = ref.vertices[_landmark_ids(ref)]
    return ref


def _random_similarity(seed: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    return 0.8 + 0.4 * rng.random(), rot, rng.normal(size=3) * 50.0


def test_the_scan_loads_as_one_closed_surface(scan):
    """The file's 9,279 vertices, split along texture seams, weld into one closed surface facing +z."""
    assert scan.vertices.shape == (8844, 3) and scan.triangles.shape == (17684, 3)
    edge_open, _ = open_edges(scan.triangles, len(scan.vertices))
    assert not edge_open.any()
    np.testing.assert_allclose(np.linalg.norm(scan.normals, axis=1), 1.0, atol=1e-9)
    tip = np.argmax(scan.vertices[:, 2])
    assert scan.normals[tip, 2] > 0.9  # the most forward point (the nose tip) faces forward
    assert abs(scan.vertices[tip, 0]) < 0.05 * np.ptp(scan.vertices[:, 0])  # on the midline


def test_scale_from_the_inner_eye_corners():
    lm = np.zeros((478, 3))
    lm[133] = [-0.25, 1.0, 2.0]
    lm[362] = [0.25, 1.0, 2.0]
    assert scale_from_landmarks(lm) == pytest.approx(INTERCANTHAL_MM / 0.5)
    lm[362] = np.nan
    with pytest.raises(ValueError):
        scale_from_landmarks(lm)


def test_reference_scores_the_front_of_the_face_within_the_crop(reference):
    scored = reference.vertices[reference.scored]
    assert np.linalg.norm(scored, axis=1).max() < CROP_RADIUS_MM
    assert 1500 < len(scored) < 3000, len(scored)
    # the scan is closed: the inner surfaces inside the crop (nostrils, mouth, eye pockets) are left out
    inside = np.linalg.norm(reference.vertices, axis=1) < CROP_RADIUS_MM
    assert (inside & ~reference.scored).sum() > 500


def test_a_mesh_against_itself_after_a_similarity_is_zero(reference):
    """The scan moved, turned and scaled by a known similarity, started from landmarks 3 mm off: ICP
    finds the inverse and every scored vertex is 0 mm from it."""
    s, rot, t = _random_similarity(1)
    moved = s * reference.vertices @ rot.T + t
    noisy = moved[_landmark_ids(reference)] + np.random.default_rng(2).normal(size=(N_LANDMARKS, 3)) * 3.0 * s
    init = landmark_alignment(reference, noisy)
    start = compare_with_scan(reference, moved, reference.triangles, init)
    assert start.scale == pytest.approx(1.0 / s, rel=1e-4)
    np.testing.assert_allclose(start.rotation, rot.T, atol=1e-4)
    assert start.rmse_mm < 1e-3 and start.median_mm < 1e-3, start.rmse_mm
    assert start.coverage == 1.0 and start.icp_iterations > 1
    # the same landmarks without ICP would be mm off: the test needs ICP
    from fitting.bench.common import apply_similarity
    off = np.linalg.norm(apply_similarity(moved, *init) - reference.vertices, axis=1)[reference.scored]
    assert off.mean() > 0.5, off.mean()


def test_a_known_bump_gives_its_height(reference):
    """A 2 mm Gaussian bump raised on the mesh's cheek: the scan lies 2 mm inside the mesh at the bump's
    top (signed -2 mm), about 0 mm far from it (ICP leans a little toward the bump: under 0.1 mm)."""
    height, sigma = 2.0, 10.0
    centre = reference.vertices[reference.scored][np.argmin(np.linalg.norm(
        reference.vertices[reference.scored] - np.array([40.0, -10.0, -30.0]), axis=1))]
    r = np.linalg.norm(reference.vertices - centre, axis=1)
    bumped = reference.vertices + (height * np.exp(-r ** 2 / (2 * sigma ** 2)))[:, None] * reference.normals
    cmp = compare_with_scan(reference, bumped, reference.triangles, (1.0, np.eye(3), np.zeros(3)))
    r_scored = r[reference.scored]
    top = np.argmin(r_scored)
    assert cmp.signed_mm[top] == pytest.approx(-height, rel=0.05)
    assert np.abs(cmp.signed_mm[r_scored > 4 * sigma]).max() < 0.1
    assert cmp.rmse_mm > 0.1 and cmp.coverage == 1.0


def test_scan_vertices_over_a_hole_have_no_footprint(reference):
    """Triangles cut from the mesh round a point: the scan's vertices over the hole are not scored."""
    centre = np.array([0.0, 30.0, -20.0])  # between the eyes
    near = np.linalg.norm(reference.vertices[reference.triangles].mean(1) - centre, axis=1) < 12.0
    cmp = compare_with_scan(reference, reference.vertices, reference.triangles[~near], (1.0, np.eye(3), np.zeros(3)))
    r = np.linalg.norm(reference.vertices[reference.scored] - centre, axis=1)
    assert np.isnan(cmp.signed_mm[r < 8.0]).all()
    assert np.isfinite(cmp.signed_mm[r > 16.0]).all()
    assert cmp.rmse_mm < 1e-3 and 0.9 < cmp.coverage < 1.0


def test_the_uniform_look_is_one_albedo_under_order_2_light(reference):
    """The face pixels of the uniform look are the skin albedo times the SH shading of the scan's normals
    there: the median exactly, 99 % within 2 % (the photo is rendered at twice the size and shrunk; the
    rest straddle a depth edge, the nose over the cheek, where the samples see two surfaces)."""
    from fitting.bench.scan_render import SKIN_ALBEDO, normal_map, render_photo, uniform_light
    from fitting.stages.fine import erode
    from sfs.sh import sh_irradiance

    size = 256
    photo = render_photo(reference, "uniform", 20.0, size)
    normals, mask = normal_map(reference, photo.camera, photo.camera.intrinsics[0], size)
    inner = erode(torch.from_numpy(mask)[None], 2)[0].numpy()
    shading = sh_irradiance(torch.from_numpy(normals)[None], uniform_light())[0].numpy()
    albedo = photo.image[inner] / shading[inner]
    assert inner.sum() > 5000
    np.testing.assert_allclose(np.median(albedo, 0), SKIN_ALBEDO, rtol=2e-3)
    assert np.percentile(np.abs(albedo / np.asarray(SKIN_ALBEDO) - 1).max(1), 99) < 0.02


# Today's code on the smoke run (yaw 0, uniform look, photo 384 px, crop 256 px): RMSE mean face 1.96,
# coarse 1.65, medium 1.60, fine 1.58 mm; the fine stage's albedo spread 6.5 % (std/mean); normals
# coarse 10.1, medium 11.2, fine 10.7 deg. The bounds below leave room for small changes and fail on
# a broken protocol, camera or normal convention (a flipped normal map gives ~170 deg).
ALBEDO_SPREAD_MAX_PERCENT = 9.0


def test_top_expression_leaves_the_eyes_closing_apart():
    """The scan's eyes are closed: eyeBlink near 1 is right there, so the bench's top expression is the
    largest of the others, with the eyeBlink weights beside it."""
    from fitting.bench.scan import top_expressions

    top, blink = top_expressions({"eyeBlink_L": 0.98, "browDown_L": 0.4, "eyeBlink_R": 0.9, "jawOpen": 0.1})
    assert top == ("browDown_L", 0.4) and blink == {"eyeBlink_L": 0.98, "eyeBlink_R": 0.9}
    top, blink = top_expressions({"eyeBlink_L": 0.5})
    assert top[0] == "" and math.isnan(top[1]) and blink == {"eyeBlink_L": 0.5}


def test_scan_bench_smoke(ict_dir, face_model, tmp_path, capsys):
    """One yaw, one look, reduced sizes: a finite row, fits that beat the mean face, the albedo spread on
    the uniform look within ALBEDO_SPREAD_MAX_PERCENT, the error picture written, and the oracle: shape
    from shading started from the scan's own depth map brings that depth's normals closer to the scan's
    (measured 3.5 -> 2.3 deg here; a sign or unit error in the depth map or the SfS gives far more)."""
    from fitting.bench.__main__ import main

    assert main(["scan", "--yaws", "0", "--looks", "uniform", "--size", "384", "--crop-size", "256",
                 "--model-dir", str(ict_dir), "--out", str(tmp_path), "--oracle", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "CC BY 3.0" in out
    lines = out.splitlines()
    head = lines.index("look: uniform")
    cells = lines[head + 3].split()
    # the top expression but eyeBlink is a name and a weight, then the eyeBlink_L/R weights
    assert cells[0] == "0" and len(cells) == 19, cells
    rmse = {m: float(c.split("/")[0]) for m, c in zip(("mean", "coarse", "neutral", "medium", "fine"), cells[2:7])}
    medium_less_coarse = float(cells[7])
    normals = [tuple(float(x) for x in c.split("/")) for c in cells[8:11]]
    fine_over_coarse = float(cells[11])
    spread = float(cells[12])
    assert all(math.isfinite(v) for v in rmse.values())
    assert 1.5 < rmse["mean"] < 2.5, rmse
    for stage in ("coarse", "medium", "fine"):
        assert rmse[stage] < rmse["mean"], rmse
    # the 3-decimal columns agree with the 2- and 1-decimal ones beside them (to their rounding)
    assert abs(medium_less_coarse - (rmse["medium"] - rmse["coarse"])) <= 0.0101, (medium_less_coarse, rmse)
    assert abs(fine_over_coarse - normals[2][0] / normals[0][0]) <= 0.06 / normals[0][0] + 0.001, cells[8:12]
    for mean_deg, median_deg in normals:
        assert 3.0 < mean_deg < 20.0 and median_deg <= mean_deg
    assert 0.0 < spread < ALBEDO_SPREAD_MAX_PERCENT, spread
    expression, weight = cells[13], float(cells[14])
    assert expression.replace("_", "").isalnum() and 0.0 <= weight <= 1.0, cells[13:15]
    assert not expression.startswith("eyeBlink"), expression
    assert all(0.0 <= float(x) <= 1.0 for x in cells[15].split("/")) and cells[15].count("/") == 1, cells[15]
    scale = float(re.search(r"scale (\d+\.\d+) mm per scan unit", out).group(1))
    assert scale == pytest.approx(MM_PER_UNIT, rel=0.03)
    assert (tmp_path / "scan_error_yaw0.png").is_file()
    start, refined, fine = (float(x) for x in re.search(r"uniform 0: (\d+\.\d) -> (\d+\.\d) \((\d+\.\d)\)", out).groups())
    assert refined < start < 6.0 and fine == normals[2][0], (start, refined, fine)
