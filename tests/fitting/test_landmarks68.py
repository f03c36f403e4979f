"""landmarks68.json: the 68 iBUG points on the fitted mesh, in mm and projected into the photo."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fitting.api import FaceFitter
from fitting.stages.coarse import CoarseSettings

CROP = 256
FAST = CoarseSettings(photometric=False)
# MediaPipe Face Mesh points at the same places as iBUG 36, 45 (outer eye corners), 48, 54 (mouth corners).
IBUG_TO_MEDIAPIPE = {36: 33, 45: 263, 48: 61, 54: 291}
# The two markups put a corner a little differently; a wrong order, frame or flip would be a whole IOD off.
CORNER_TOL_IOD = 0.15


@pytest.fixture(scope="module")
def result(face_model, good_photos):
    with FaceFitter(("coarse", "medium"), model=face_model, crop_size=CROP, coarse=FAST) as f:
        return f.fit(good_photos[0])


def test_points_are_the_last_mesh_at_the_multipie68_vertices(result, face_model):
    lm = result.landmarks68
    assert lm["stage"] == "medium" and lm["units"] == "mm"
    ids = face_model.landmark_sets["multipie68"].numpy()
    np.testing.assert_array_equal(lm["vertex_ids"], ids)
    np.testing.assert_allclose(lm["model_mm"], result.meshes["medium"].vertices[ids], atol=1e-4)


def test_photo_pixels_are_the_photo_cameras_projection(result):
    lm, cam = result.landmarks68, result.camera
    x = lm["model_mm"] @ cam["rotation"].T + cam["translation"]
    np.testing.assert_allclose(lm["camera_mm"], x, atol=1e-3)
    fx, fy, cx, cy = cam["intrinsics"]
    depth = -x[:, 2]
    uv = np.stack([cx + fx * x[:, 0] / depth, cy - fy * x[:, 1] / depth], 1)
    np.testing.assert_allclose(lm["photo_px"], uv, atol=1e-2)
    np.testing.assert_allclose(lm["depth_mm"], depth, atol=1e-3)


def test_points_sit_on_the_face_in_ibug_order(result):
    lm, face = result.landmarks68, result.crop.landmarks
    for ibug, mp in IBUG_TO_MEDIAPIPE.items():
        gap = np.linalg.norm(lm["photo_px"][ibug] - face.points[mp, :2]) / face.inter_ocular
        assert gap < CORNER_TOL_IOD, (ibug, gap)


def test_saved_as_landmarks68_json(result, tmp_path):
    folder = result.save(tmp_path / "face")
    saved = json.loads((folder / "landmarks68.json").read_text())
    assert np.asarray(saved["photo_px"]).shape == (68, 2) and np.asarray(saved["model_mm"]).shape == (68, 3)
    np.testing.assert_allclose(saved["photo_px"], result.landmarks68["photo_px"], atol=1e-4)
    assert "jaw" in saved["order"]
    assert (folder / "params.json").is_file()  # the 478 and everything else as before
