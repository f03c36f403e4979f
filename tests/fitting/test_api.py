"""The Python API end to end: batches with bad inputs, arrays, face_index, stage validation, initialisers.

All fits here run the coarse stage without the photometric polish (and the
medium stage where it is cheap) on 256 px crops: the point is the API's
behaviour, not the fit's accuracy (test_coarse, test_pipeline_photos).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from fitting.api import FaceFitter, FitError, FitResult, unique_names
from fitting.stages.coarse import CoarseInit, CoarseSettings

CROP = 256
FAST = CoarseSettings(photometric=False)


@pytest.fixture(scope="module")
def fitter(face_model):
    with FaceFitter(("coarse", "medium"), model=face_model, crop_size=CROP, coarse=FAST) as f:
        yield f


@pytest.fixture(scope="module")
def mixed_batch(fitter, good_photos, bad_inputs):
    sources = [good_photos[0], bad_inputs["corrupt"], bad_inputs["grey"], good_photos[1]]
    return sources, fitter.fit_many(sources)


def _assert_one_line_error(result: FitResult, *must_contain: str) -> None:
    assert not result.ok
    assert isinstance(result.error, str) and result.error.strip()
    assert "\n" not in result.error and "\r" not in result.error
    for text in must_contain:
        assert text in result.error, (text, result.error)
    assert result.meshes == {} and result.params == {}


# --------------------------------------------------------------------------- batches with bad inputs

def test_fit_many_survives_bad_files(mixed_batch):
    sources, results = mixed_batch
    assert len(results) == 4
    assert [r.name for r in results] == [Path(s).stem for s in sources]  # input order kept
    assert [r.source for r in results] == [str(s) for s in sources]
    good, corrupt, grey, good2 = results
    _assert_one_line_error(corrupt, "corrupt.jpg", "cannot read image")
    _assert_one_line_error(grey, "grey", "no face")
    for r in (good, good2):
        assert r.ok and r.error is None
        assert set(r.meshes) == {"neutral", "coarse", "medium"}
        for mesh in r.meshes.values():
            assert mesh.vertices.shape == (r.meshes["coarse"].vertices.shape[0], 3)
            assert np.isfinite(mesh.vertices).all()
        assert np.isfinite(r.params["landmark_error_iod"]["coarse"])
    # two different people: two different fits
    assert not np.allclose(good.meshes["coarse"].vertices, good2.meshes["coarse"].vertices)


def test_iter_fit_hands_over_results_as_they_are_done_and_keeps_none(face_model, good_photos, bad_inputs):
    import gc
    import weakref
    sources = [good_photos[0], bad_inputs["corrupt"], good_photos[1], good_photos[0]]
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, batch_size=2) as f:
        results = f.iter_fit(sources)
        first = next(results)  # the unreadable photo comes out at once, before the chunk of earlier photos
        assert (first.index, first.ok) == (1, False) and "cannot read image" in first.error
        seen, refs = [], []
        for r in results:
            seen.append((r.index, r.name, r.ok))
            refs.append(weakref.ref(r))
            del r
            gc.collect()
            if len(refs) == 3:
                # the first chunk's results are gone once the caller let go of them: nothing piles up inside
                assert refs[0]() is None and refs[1]() is None
        assert seen == [(0, Path(sources[0]).stem, True), (2, Path(sources[2]).stem, True),
                        (3, Path(sources[3]).stem + "-2", True)]


def test_unique_names():
    assert unique_names(["a", "b"]) == ["a", "b"]
    assert unique_names(["face", "face", "face"]) == ["face", "face-2", "face-3"]
    # a suffix that another photo already has is skipped, and that photo keeps its name
    assert unique_names(["face", "face", "face-2"]) == ["face", "face-3", "face-2"]
    assert unique_names(["face", "face-2", "face"]) == ["face", "face-2", "face-3"]


def test_fit_many_checks_names(fitter, good_photos):
    with pytest.raises(ValueError, match="2 names for 1 images"):
        fitter.fit_many([good_photos[0]], names=["a", "b"])


def test_neutral_mesh_is_the_identity_without_expression(mixed_batch, face_model):
    _, (good, *_) = mixed_batch
    ids = torch.as_tensor(np.asarray(good.params["id_coeffs"], np.float32))[None]
    exps = torch.tensor([[float(v) for v in good.params["exp_coeffs"].values()]])
    np.testing.assert_allclose(good.meshes["neutral"].vertices, face_model(ids)[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(good.meshes["coarse"].vertices, face_model(ids, exps)[0].numpy(), atol=1e-3)
    assert exps.abs().max() > 0.05  # the photo's face has an expression, which the neutral mesh leaves out
    moved = np.linalg.norm(good.meshes["coarse"].vertices - good.meshes["neutral"].vertices, axis=1)
    assert moved.max() > 0.5  # mm


def test_fit_raises_fit_error_on_bad_input(fitter, bad_inputs, good_photos):
    with pytest.raises(FitError, match="corrupt.jpg"):
        fitter.fit(bad_inputs["corrupt"])
    with pytest.raises(FitError, match="no face"):
        fitter.fit(bad_inputs["grey"])
    with pytest.raises(FitError, match="no such file"):
        fitter.fit(good_photos[0].with_name("does_not_exist.jpg"))


def test_fit_batch_on_uint8_array(fitter):
    """(2, H, W, 3) uint8: the astronaut and its mirror image; mirrored, yaw and roll change sign."""
    import skimage.data
    img = skimage.data.astronaut()
    batch = np.stack([img, np.ascontiguousarray(img[:, ::-1])])
    assert batch.dtype == np.uint8 and batch.shape[0] == 2
    results = fitter.fit_batch(batch)
    assert [r.name for r in results] == ["image_000", "image_001"]
    assert all(r.ok for r in results), [r.error for r in results]
    a, b = (r.params["pose_deg"] for r in results)
    assert abs(a["yaw"] + b["yaw"]) < 4.0, (a, b)
    assert abs(a["roll"] + b["roll"]) < 4.0, (a, b)
    assert abs(a["pitch"] - b["pitch"]) < 4.0, (a, b)


def test_fit_batch_on_a_channels_first_tensor(fitter):
    """(B, 3, H, W) float tensor, as torchvision keeps images: the same fit as the uint8 array."""
    import skimage.data
    img = skimage.data.astronaut()
    tensor = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    (from_tensor,), (from_array,) = fitter.fit_batch(tensor), fitter.fit_batch(img[None])
    assert from_tensor.ok, from_tensor.error
    # mm; two runs on the same pixels differ by ~1e-3 mm (MediaPipe's threads)
    np.testing.assert_allclose(from_tensor.meshes["coarse"].vertices, from_array.meshes["coarse"].vertices, atol=0.05)
    (bad,) = fitter.fit_batch(tensor * 255)
    _assert_one_line_error(bad, "image_000", "floats must be in [0, 1]")


def test_fit_many_on_pillow_images(fitter, mixed_batch):
    """A Pillow image fits like its file, named after it; one made in memory gets a numbered name."""
    from PIL import Image
    sources, (from_path, *_) = mixed_batch
    with Image.open(sources[0]) as pil:
        in_memory = pil.convert("RGB")  # no file name any more
        from_pil, from_memory = fitter.fit_many([pil, in_memory])
    assert from_pil.ok and from_memory.ok, (from_pil.error, from_memory.error)
    assert from_pil.name == Path(sources[0]).stem and from_pil.source == str(sources[0])
    assert from_memory.name == "image_001" and from_memory.source is None
    for r in (from_pil, from_memory):
        np.testing.assert_allclose(r.meshes["coarse"].vertices, from_path.meshes["coarse"].vertices, atol=0.05)


def test_face_index_out_of_range_is_reported(face_model, good_photos):
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, face_index=3) as f:
        (res,) = f.fit_many([good_photos[0]])
        _assert_one_line_error(res, "face_index 3", "1 face", good_photos[0].stem)
        with pytest.raises(FitError, match="out of range"):
            f.fit(good_photos[0])


@pytest.mark.parametrize("stages, message", [
    (("medium",), "must start at coarse"),
    (("coarse", "fine"), "not skip"),
    ((), "no stages given"),
    (("coarse", "shading"), "unknown stage 'shading'"),
])
def test_stage_validation(face_model, stages, message):
    with pytest.raises(ValueError, match=message):
        FaceFitter(stages, model=face_model)


@pytest.mark.parametrize("option, message", [
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(face_index=-1), "face_index counts from 0"),
    (dict(crop_size=32), "crop_size must be at least 64"),
])
def test_option_validation(face_model, option, message):
    with pytest.raises(ValueError, match=message):
        FaceFitter(("coarse",), model=face_model, **option)


# --------------------------------------------------------------------------- initialisers

class LandmarkNet:
    """A tiny 'network' defined here: Linear(478 * 2 -> 100) on normalised landmark positions, fixed seed."""

    def __init__(self, n_id: int = 100):
        gen = torch.Generator().manual_seed(0)
        self.linear = torch.nn.Linear(478 * 2, n_id)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=gen) * 0.05)
            self.linear.bias.copy_(torch.randn(self.linear.bias.shape, generator=gen) * 0.5)
        self.calls = 0

    def __call__(self, image: torch.Tensor, landmarks: torch.Tensor, model) -> CoarseInit:
        self.calls += 1
        assert image.ndim == 3 and image.shape[-1] == 3 and landmarks.shape == (478, 3)
        uv = landmarks[:, :2].float().cpu()  # the stage moves what an initialiser returns to its device
        x = ((uv - uv.mean(0)) / uv.std()).reshape(1, -1)
        with torch.no_grad():
            return CoarseInit(id_coeffs=self.linear(x))


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the initialiser registry (whatever a test registers is gone afterwards)."""
    import fitting.stages.initializers as inits
    monkeypatch.setattr(inits, "_REGISTRY", dict(inits._REGISTRY))
    return inits


def test_registered_initializer_is_called_and_used(registry, face_model, good_photos):
    from fitting.stages.initializers import register_initializer, resolve_initializer

    net = LandmarkNet()

    @register_initializer("test_net")
    def test_net(image, landmarks, model):
        return net(image, landmarks, model)

    assert resolve_initializer("test_net") is test_net
    photos = list(good_photos)
    # No alternations: the stage returns the coefficients it started from, i.e. the network's output.
    start_only = CoarseSettings(photometric=False, alternations=0)
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=start_only, initializer="test_net") as f:
        results = f.fit_many(photos)
    assert net.calls == len(photos)
    for r in results:
        assert r.ok, r.error
        expected = LandmarkNet()(torch.from_numpy(r.crop.image), torch.from_numpy(r.crop.points), face_model)
        np.testing.assert_allclose(r.params["id_coeffs"], expected.id_coeffs[0].numpy(), atol=1e-5)
        assert np.abs(r.params["id_coeffs"]).max() > 0.5  # a real, non-zero start

    # Full settings: the fit differs from the run without the initialiser (the start matters) and stays good.
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer="test_net") as f:
        with_init = f.fit(photos[0])
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST) as f:
        without = f.fit(photos[0])
    assert net.calls == len(photos) + 1
    assert not np.allclose(with_init.params["id_coeffs"], without.params["id_coeffs"], atol=1e-3)
    assert with_init.params["landmark_error_iod"]["coarse"] < 0.05
    # The initialiser's estimate is the centre of the shape prior: with a very
    # strong prior the fit stays at the network's output (without one it would
    # collapse to the mean face, zeros).
    strong = dataclasses.replace(FAST, lambda_id=1e7)
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=strong, initializer="test_net") as f:
        held = f.fit(photos[0])
    expected = LandmarkNet()(torch.from_numpy(held.crop.image), torch.from_numpy(held.crop.points), face_model)
    np.testing.assert_allclose(held.params["id_coeffs"], expected.id_coeffs[0].numpy(), atol=1e-2)


def test_entry_point_initializer_is_found(registry, monkeypatch, face_model, good_photos):
    from fitting.stages.initializers import ENTRY_POINT_GROUP, available_initializers, resolve_initializer

    net = LandmarkNet()

    class FakeEntryPoint(importlib.metadata.EntryPoint):
        def load(self):
            return net

    eps = [FakeEntryPoint(name="ep_net", value="somepackage.nets:landmark_net", group=ENTRY_POINT_GROUP)]
    asked = []

    def fake_entry_points(**kwargs):
        asked.append(kwargs)
        return [ep for ep in eps if ep.group == kwargs.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    assert "ep_net" in available_initializers()
    assert asked and asked[-1] == {"group": ENTRY_POINT_GROUP}
    assert resolve_initializer("ep_net") is net
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer="ep_net") as f:
        assert f.fit(good_photos[0]).ok
    assert net.calls == 1


def test_unknown_initializer_lists_the_available_ones(registry):
    from fitting.stages.initializers import register_initializer, resolve_initializer

    register_initializer("test_net")(LandmarkNet())
    with pytest.raises(KeyError) as info:
        resolve_initializer("no_such_net")
    text = str(info.value)
    assert "no_such_net" in text and "mediapipe_mesh" in text and "test_net" in text
    assert resolve_initializer(None) is None
    fn = LandmarkNet()
    assert resolve_initializer(fn) is fn


def test_mediapipe_mesh_initializer_on_a_real_photo(face_model, fitter, good_photos):
    from fitting.stages.initializers import resolve_initializer

    init = resolve_initializer("mediapipe_mesh")
    crop = fitter.fit(good_photos[0]).crop
    out = init(torch.from_numpy(crop.image), torch.from_numpy(crop.points), face_model)
    assert isinstance(out, CoarseInit)
    ids = torch.as_tensor(out.id_coeffs)
    assert ids.shape == (1, face_model.n_id)
    assert torch.isfinite(ids).all() and ids.abs().max() > 0  # not just the mean face
    assert ids.abs().max() <= 3.0
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer="mediapipe_mesh") as f:
        res = f.fit(good_photos[0])
    assert res.params["landmark_error_iod"]["coarse"] < 0.05
