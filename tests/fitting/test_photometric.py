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


def test_compared_pixels_shrink_by_the_erosion():
    """The polish compares the skin and nose regions, shrunk by ``photometric_erode_px`` (the pixels next to
    brows, eyelids and lips are left out); the image's own edge does not shrink them."""
    import torch
    from fitting.stages.photometric import compared_pixels
    from landmarks import REGION_NAMES
    labels = torch.full((1, 40, 40), REGION_NAMES.index("background"), dtype=torch.long)
    labels[0, 10:30, 10:30] = REGION_NAMES.index("skin")
    labels[0, 0:8, 0:40] = REGION_NAMES.index("nose")       # touches the image's top edge
    assert int(compared_pixels(labels, 0).sum()) == 20 * 20 + 8 * 40
    eroded = compared_pixels(labels, 2)
    assert int(eroded[0, 10:30, 10:30].sum()) == 16 * 16
    assert bool(eroded[0, 0, 20]) and not bool(eroded[0, 6, 20])  # the top edge stays, the bottom shrinks


def test_id_prior_scale_weighs_the_identity_prior(face_model, start):
    """``id_prior_scale`` (the joint fit's many views) scales the identity prior alone: a weak one lets the
    identity coefficients move farther from the least squares' than the full prior does."""
    import dataclasses
    batch, corr, settings, coarse = start
    quick = dataclasses.replace(settings, photometric_steps=8, photometric_size=96)
    renderer = Renderer("cpu")
    full = photometric_refine(face_model, batch, corr, coarse, quick, renderer)
    weak = photometric_refine(face_model, batch, corr, coarse, quick, renderer, id_prior_scale=0.01)
    assert float(weak.id_coeffs.norm()) > float(full.id_coeffs.norm())


def test_shading_outliers_finds_a_dark_patch_and_leaves_the_skin():
    """A dark patch (a beard, a brow: half as bright) and a highlight on skin that one colour under the light
    explains, with a gentle shading error (up to 15 %) and noise: the patch and the highlight are outliers,
    the skin is not, and nothing outside the mask is."""
    import torch
    from fitting.stages.photometric import shading_outliers
    gen = torch.Generator().manual_seed(0)
    predicted = torch.full((1, 32, 32, 3), 0.6)
    ramp = torch.linspace(0.85, 1.15, 32)[None, :, None, None]   # a shape error's shading
    target = predicted * ramp + 0.01 * torch.randn(1, 32, 32, 3, generator=gen)
    target[0, 20:26, 8:24] *= 0.5
    target[0, 4:8, 4:8] = 0.98
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    mask[0, :, :2] = False
    out = shading_outliers(target, predicted, mask, 0.7)
    assert bool(out[0, 20:26, 8:24].all()) and bool(out[0, 4:8, 4:8].all())
    rest = mask.clone()
    rest[0, 20:26, 8:24] = False
    rest[0, 4:8, 4:8] = False
    assert not bool(out[rest].any())
    assert not bool(out[~mask].any())
