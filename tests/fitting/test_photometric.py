"""The coarse stage's photometric polish (fitting.stages.photometric) on a real photo."""
from __future__ import annotations

import numpy as np
import pytest

from fitting.stages.coarse import CoarseSettings, fit_landmarks
from fitting.stages.correspondence import load_correspondence
from fitting.detections import DetectionBatch, crop_face
from fitting.stages.photometric import photometric_refine
from fitting.rendering.renderer import Renderer
from landmarks import FaceMeshDetector, load_image


@pytest.fixture(scope="module")
def start(face_model, good_photos):
    img = load_image(good_photos[0])
    with FaceMeshDetector() as det:
        face = det.detect_one(img)
    batch = DetectionBatch.stack([crop_face(img.pixels, face, 256, img.name)])
    corr = load_correspondence()
    settings = CoarseSettings()
    return batch, corr, settings, fit_landmarks(face_model, batch, corr, settings)


def test_polish_changes_the_shape_and_stays_on_the_landmarks(face_model, start):
    batch, corr, settings, coarse = start
    polished = photometric_refine(face_model, batch, corr, coarse, settings, Renderer("cpu"))
    moved = np.linalg.norm(polished.vertices[0].numpy() - coarse.vertices[0].numpy(), axis=1)
    assert 0.1 < moved.mean() < 5.0          # mm: the shading moved the face, within reason
    assert np.isfinite(polished.vertices).all() and np.isfinite(polished.light).all()
    assert float(polished.landmark_error[0]) < 1.5 * float(coarse.landmark_error[0])
    lo, hi = settings.exp_bounds
    assert float(polished.exp_coeffs.min()) >= lo and float(polished.exp_coeffs.max()) <= hi


def test_landmark_scale_weighs_the_landmark_term(face_model, start):
    """``landmark_scale`` (the joint fit's 1 / N views) scales the landmark term alone: a small one lets
    the shading pull the face off the landmarks farther than the full weight does."""
    import dataclasses
    batch, corr, settings, coarse = start
    quick = dataclasses.replace(settings, photometric_steps=8, photometric_size=96)
    renderer = Renderer("cpu")
    full = photometric_refine(face_model, batch, corr, coarse, quick, renderer)
    weak = photometric_refine(face_model, batch, corr, coarse, quick, renderer, landmark_scale=0.02)
    assert float(weak.landmark_error[0]) > float(full.landmark_error[0])
    def moved(r):  # mm, mean over the vertices
        return float(np.linalg.norm(r.vertices[0].numpy() - coarse.vertices[0].numpy(), axis=1).mean())
    assert moved(weak) > moved(full)
