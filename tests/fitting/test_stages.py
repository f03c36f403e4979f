"""The stage interface: one shape for every stage, a frozen context, results that carry the camera,
and model metadata that flows into every result instead of being hard-wired."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from fitting.camera import Camera
from fitting.stages import STAGE_NAMES, check_stages, load_stage
from fitting.stages.context import FitContext, Stage


def test_every_stage_has_the_same_shape():
    for name in STAGE_NAMES:
        stage = load_stage(name)
        assert isinstance(stage, Stage) and stage.name == name
        assert dataclasses.is_dataclass(stage.settings_type())  # defaults construct
        assert list(stage.run.__code__.co_varnames[:3]) == ["context", "batch", "previous"]


def test_stage_lists_are_checked():
    assert check_stages(["coarse", "medium"]) == ("coarse", "medium")
    for bad, why in ((["medium"], "must start at coarse"), ([], "no stages"), (["coarse", "shiny"], "unknown stage")):
        with pytest.raises(ValueError, match=why):
            check_stages(bad)
    with pytest.raises(ValueError, match="unknown stage"):
        load_stage("shiny")


def test_context_is_frozen(face_model):
    from fitting.stages.correspondence import load_correspondence
    ctx = FitContext(model=face_model, correspondence=load_correspondence(), renderer=None,
                     device=torch.device("cpu"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.model = None
    cam = Camera.from_image_size(8, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.rotation = torch.eye(3)[None]


def test_stage_results_carry_one_camera_and_model_metadata(face_model, good_photos, tmp_path):
    """coarse -> medium through the pipeline: both results hold the same Camera (the coarse pose) and
    model-frame vertices; the model's own name and licence reach params.json and the result folder."""
    from fitting.api import FaceFitter
    renamed = dataclasses.replace(face_model, name="Test Model", license_name="TEST_LICENSE.txt",
                                  license_text="test notice\n")
    with FaceFitter(("coarse", "medium"), model=renamed) as fitter:
        from fitting.detections import DetectionBatch
        from fitting.pipeline import run_stages
        job = fitter._detect(str(good_photos[0]), "face")[0]
        batch = DetectionBatch.stack([job.crop])
        coarse = load_stage("coarse").run(fitter.context, batch, None)
        medium = load_stage("medium").run(fitter.context, batch, coarse)
        assert medium.camera is coarse.camera
        assert coarse.vertices.shape == medium.vertices.shape == (1, face_model.n_vertices, 3)
        # model frame: the medium mesh moves a little from the coarse one, not by the camera's translation
        assert float((medium.vertices - coarse.vertices).norm(dim=-1).median()) < 3.0
        result = run_stages(fitter.context, fitter.stages, [job])[0]
    folder = result.save(tmp_path / "face")
    assert (folder / "TEST_LICENSE.txt").read_text() == "test notice\n"
    assert not (folder / "ICT_LICENSE.txt").exists()
    params = json.loads((folder / "params.json").read_text())
    assert params["model"]["name"] == "Test Model"
    # the photo camera and the crop camera are one camera: crop = Camera.crop(photo)
    k_photo = torch.tensor(params["camera"]["intrinsics"])[None]
    box = torch.tensor(params["camera"]["crop_box_xy_scale"])[None]
    photo = Camera(k_photo, torch.eye(3)[None], torch.zeros(1, 3), *params["camera"]["photo_size_hw"])
    np.testing.assert_allclose(photo.crop(box, 512).intrinsics[0].numpy(), params["camera"]["crop_intrinsics"],
                               rtol=1e-5)


def test_model_uv_atlas(face_model):
    assert face_model.uv_tiles == 2  # ICT's face spans two UDIM tiles
    atlas = face_model.uv_atlas()
    assert float(atlas[:, 0].max()) <= 1.0 and float(atlas[:, 0].min()) >= 0.0
    torch.testing.assert_close(atlas[:, 1], face_model.uvs[:, 1])
    assert face_model.name == "ICT Face Model Light" and "MIT" in face_model.license_text
