"""Faces MediaPipe's mesh misses (near profiles) fitted from the 3DDFA_V2 regressor alone (fitting.regressor_faces)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fitting.api import FaceFitter
from fitting.bench.align import nme_percent
from fitting.camera import DEFAULT_FOV
from fitting.result import FitError
from fitting.stages.coarse import CoarseSettings, fit_landmarks
from fitting.stages.fusion import FusionSettings
from landmarks import FaceMeshDetector
from landmarks.regressor_files import ENV_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "landmarks"))
from shared_3ddfa import DDFA_DIR  # noqa: E402

CROP = 256
FAST = CoarseSettings(photometric=False)
# `bench align` seed 0, yaw bin 60-90, face 3: MediaPipe's short-range detector boxes it (score 0.75) but
# Face Mesh's presence score there is 0.008 (threshold 0.5), so today it is not found
YAW, PITCH, SEED = -89.7, 4.3, (0, 2, 3)


@pytest.fixture(autouse=True)
def no_regressor_env(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)


@pytest.fixture(scope="module")
def profile(closed_model):
    from fitting.bench.common import _generator
    sf = _generator(closed_model)(SEED, size=512, fov_deg=DEFAULT_FOV, yaw_deg=YAW, pitch_deg=PITCH)
    return sf.image, np.asarray(sf.params["landmarks68_uvd"], np.float64)[:, :2]


def test_mediapipe_misses_the_profile_but_a_detector_boxes_it(profile):
    image, truth = profile
    with FaceMeshDetector() as det:
        assert det.detect(image) == []
        boxes = det.boxes_without_mesh(image)
    assert len(boxes) >= 1
    u0, v0, u1, v1 = boxes[0]
    centre = truth.mean(0)
    assert u0 < centre[0] < u1 and v0 < centre[1] < v1, (boxes[0], centre)


def test_the_profile_is_fitted_from_the_regressor_alone(face_model, profile):
    image, truth = profile
    with FaceFitter(("coarse", "medium"), model=face_model, crop_size=CROP, coarse=FAST, initializer="3ddfa_v2",
                    regressor_dir=DDFA_DIR) as f:
        r = f.fit(image)
    assert r.params["landmark_sources"] == {"mediapipe_found": False, "mediapipe_trust": 0.0, "regressor68": True}
    assert not r.crop.mediapipe
    # its landmark error is against the regressor's 68 points (the stand-in 478 are no measurement)
    assert r.params["landmark_error_reference"] == "regressor68"
    assert 0.0 < r.params["landmark_error_px"]["medium"] < 10.0, r.params["landmark_error_px"]
    # the model's 68 points on the fitted mesh land on the truth's (the regressor alone on this face reads
    # 6-7 % in `bench align`; the stand-in points at the mean face's pose would be no better than that)
    nme = nme_percent(np.asarray(r.landmarks68["photo_px"]), truth)
    assert nme < 10.0, nme
    assert abs(r.params["pose_deg"]["yaw"]) > 60.0, r.params["pose_deg"]


def test_without_the_regressor_the_profile_is_still_no_face(face_model, profile):
    image, _ = profile
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer=None) as f:
        with pytest.raises(FitError, match="no face"):
            f.fit(image)


def test_a_regressor_only_face_needs_fusion(face_model, profile):
    """Without fusion nothing would fit the regressor's points: the stand-ins must not be fitted silently."""
    from fitting.detections import DetectionBatch, crop_face
    from fitting.regressor_faces import regressor_face
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.initializers import RegressorInitializer

    image, _ = profile
    init = RegressorInitializer(DDFA_DIR)
    init.prepare()
    corr = load_correspondence()
    lm, points68 = regressor_face(image, (130.0, 136.0, 275.0, 280.0), init.regressor, face_model, corr)
    assert points68.shape == (68, 3) and lm.points.shape == (478, 3)
    batch = DetectionBatch.stack([crop_face(image, lm, CROP, "p", DEFAULT_FOV, mediapipe=False)])
    assert torch.equal(batch.mediapipe_weight, torch.zeros(1))
    with pytest.raises(ValueError, match="fusion"):
        fit_landmarks(face_model, batch, corr, CoarseSettings(photometric=False, fusion=FusionSettings(enabled=False)))


@pytest.mark.parametrize("kind", ["grey", "noise"])
def test_no_face_images_give_no_boxes(kind):
    """The regressor is run only on a detector's box: a photo without a face gives none (still no face)."""
    rng = np.random.default_rng(0)
    image = np.full((480, 640, 3), 0.5, np.float32) if kind == "grey" else rng.random((480, 640, 3)).astype(np.float32)
    with FaceMeshDetector() as det:
        assert det.detect(image) == [] and det.boxes_without_mesh(image) == []
