"""A fit works whatever autograd mode its caller is in, and gives the same meshes as a plain fit.

The coarse stage's photometric polish and the fine stage's shape from shading run Adam, which
needs autograd: under ``torch.no_grad()``, ``torch.set_grad_enabled(False)`` or
``torch.inference_mode()`` they used to fail with "element 0 of tensors does not require grad"
(or, under inference mode, "Inference tensors cannot be saved for backward"). Each mode is
compared with a plain fit of the same photo: the fit is repeatable to the bit
(test_determinism.py), so the meshes must agree to 1e-6 mm.

Small settings (256 px crop, a 4-step polish, a few SfS steps and two L-BFGS iterations in each of the fine
stage's modes and free-change levels, no subdivision) keep the three-stage fits quick; every phase that needs
gradients still runs (a phase that failed or differed under a mode fails the test on its first step), and the
point is the autograd mode, not the fit's accuracy.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from fitting.api import FaceFitter
from fitting.stages.coarse import CoarseSettings
from fitting.stages.fine import FineSettings
from sfs.grad_mode import autograd_usable, gradients_on
from sfs.refine import SfsSettings, refine_depth

STAGES = ("coarse", "medium", "fine")
CROP = 256
QUICK_COARSE = CoarseSettings(photometric_steps=4)
QUICK_FINE = FineSettings(sfs=SfsSettings(albedo_iters=3, depth_iters=(3, 3), basis_iters=2, ms_iters=2,
                                          working_size=CROP),
                               displaced_subdivisions=0, texture_height=128)
SAME_MM = 1e-6  # mm: a fit is repeatable to the bit, so any mode's meshes must match the plain fit's


@contextlib.contextmanager
def grad_disabled_globally():
    """What a library does that calls ``torch.set_grad_enabled(False)`` as a plain call (not a context)."""
    before = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        yield
    finally:
        torch.set_grad_enabled(before)


MODES = {
    "no_grad": torch.no_grad,
    "set_grad_enabled_false": grad_disabled_globally,
    "inference_mode": torch.inference_mode,
}


def _fit(fitter, photo):
    result = fitter.fit(photo)
    return {stage: result.meshes[stage].vertices for stage in STAGES + ("neutral",)}


@pytest.fixture(scope="module")
def quick_fitter(face_model):
    with FaceFitter(STAGES, model=face_model, crop_size=CROP, coarse=QUICK_COARSE, fine=QUICK_FINE, device="cpu") as f:
        yield f


@pytest.fixture(scope="module")
def plain_fit(quick_fitter, good_photos):
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    return _fit(quick_fitter, good_photos[0])


def _assert_same(meshes, reference):
    for stage, verts in reference.items():
        gap = float(np.abs(meshes[stage] - verts).max())
        assert gap <= SAME_MM, f"{stage}: {gap:.3g} mm from the plain fit"


@pytest.mark.parametrize("mode", list(MODES))
def test_fit_under_autograd_off_matches_the_plain_fit(mode, quick_fitter, plain_fit, good_photos):
    with MODES[mode]():
        meshes = _fit(quick_fitter, good_photos[0])
        # the caller's mode is left as it was
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    _assert_same(meshes, plain_fit)


def test_fitter_made_and_used_under_inference_mode(ict_dir, plain_fit, good_photos):
    """The model itself loaded under inference mode (its tensors inference tensors) still fits."""
    with torch.inference_mode():
        with FaceFitter(STAGES, model_dir=str(ict_dir), crop_size=CROP, coarse=QUICK_COARSE, fine=QUICK_FINE,
                        device="cpu") as f:
            assert f.model.mean.is_inference()
            meshes = _fit(f, good_photos[0])
    _assert_same(meshes, plain_fit)


def test_refine_depth_under_inference_mode_matches():
    """The fine stage's optimiser on its own, given inputs made under inference mode."""
    def inputs():
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
        depth0 = (500.0 + 0.02 * ((xx - 24) ** 2 + (yy - 24) ** 2))[None]
        image = (0.5 + 0.1 * torch.rand(1, 48, 48, 3, generator=g))
        mask = torch.zeros(1, 48, 48, dtype=torch.bool)
        mask[:, 8:40, 8:40] = True
        return image, depth0, mask, torch.tensor([[60.0, 60.0, 24.0, 24.0]])

    settings = SfsSettings(albedo_iters=3, depth_iters=(3, 3))
    plain = refine_depth(*inputs(), settings=settings)
    with torch.inference_mode():
        args = inputs()
        assert all(a.is_inference() for a in args)
        under = refine_depth(*args, settings=settings)
    assert torch.equal(under.depth, plain.depth)
    assert torch.equal(under.albedo, plain.albedo)


def test_autograd_usable_copies_only_inference_tensors():
    normal = torch.ones(3)
    with torch.inference_mode():
        frozen = torch.ones(3)
    with gradients_on():
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        out = autograd_usable({"a": normal, "b": [frozen, 2]})
    assert out["a"] is normal  # nothing copied in a normal fit
    assert not out["b"][0].is_inference() and torch.equal(out["b"][0], frozen)
    assert out["b"][1] == 2
