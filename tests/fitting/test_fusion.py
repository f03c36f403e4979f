"""Fusion of MediaPipe's points with the regressor's 68 in the coarse stage (fitting.stages.fusion).

The faces here are the model's own at a known camera: the truth is the model's 68 points
(``multipie68``) projected, the "regressor" reads them with 1 px of noise, and MediaPipe's points are
either the table's surface points projected (a MediaPipe that is right) or those points shuffled among
themselves (garbage with the right bounding box: a mesh that landed on the wrong place).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fitting.camera import Camera
from fitting.detections import DetectionBatch
from fitting.rotation import euler_to_matrix
from fitting.stages.coarse import CoarseInit, CoarseSettings, fit_landmarks
from fitting.stages.correspondence import load_correspondence
from fitting.stages.fusion import FusionSettings, mediapipe_to_68, mediapipe_trust
from fitting.stages.initializers import pose_from_points68
from landmarks.indices import point_groups

CROP = 256
# Exact surface points: the table's yaw-dependent offsets model MediaPipe's own drift, not these points.
SETTINGS = CoarseSettings(photometric=False, landmark_offsets=False)
NO_FUSION = dataclasses.replace(SETTINGS, fusion=FusionSettings(enabled=False))


def nme(uv: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean distance over the truth's box size sqrt(w h), in %. (68, 2) each."""
    span = truth.amax(0) - truth.amin(0)
    return float(100 * (uv - truth).norm(dim=-1).mean() / span.prod().sqrt())


def scene(model, yaw: float, pitch: float, garbage: bool, seed: int = 0):
    """(batch, init, truth68 (68, 2)): one face of random identity at ``yaw``/``pitch`` degrees."""
    g = torch.Generator().manual_seed(seed)
    ids68 = model.landmark_sets["multipie68"]
    verts = model(torch.randn(1, model.n_id, generator=g).clamp(-2, 2), torch.zeros(1, model.n_exp))
    rot = euler_to_matrix(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([3.0]))
    cam = Camera.from_image_size(CROP, CROP, batch=1, distance=600.0).with_pose(rot, torch.tensor([[5.0, 0, -600.0]]))
    uvd = cam.project(verts[:, ids68])[0]
    truth = uvd[:, :2]
    # the regressor: the 68 points with 1 px of noise, depth in pixels (larger = closer) as it writes it
    read = torch.cat([truth + torch.randn(68, 2, generator=g),
                      (-(uvd[:, 2:] - uvd[:, 2:].max()) * cam.intrinsics[0, 0] / 600.0)], 1)
    corr = load_correspondence()
    uv = cam.project(corr.points(verts))[..., :2]  # (1, 478, 2) MediaPipe that is right
    if garbage:
        uv = uv[:, torch.randperm(uv.shape[1], generator=g)]
    batch = DetectionBatch(crops=[None], images=torch.zeros(1, CROP, CROP, 3), uv=uv,
                           rel_depth=torch.zeros(1, uv.shape[1]), intrinsics=cam.intrinsics,
                           region_labels=torch.zeros(1, CROP, CROP, dtype=torch.int64),
                           groups=torch.as_tensor(point_groups(), dtype=torch.int64))
    r, t = pose_from_points68(model, read, cam.intrinsics[0])
    init = CoarseInit(rotation=r[None], translation=t[None], points68=read[None, :, :2])
    return batch, init, truth


def fitted68(model, coarse) -> torch.Tensor:
    ids68 = model.landmark_sets["multipie68"]
    return coarse.camera.project(coarse.vertices[:, ids68])[0, :, :2]


@pytest.mark.parametrize("yaw", [75.0, -80.0])
def test_profile_with_garbage_mediapipe_follows_the_regressor(face_model, yaw):
    batch, init, truth = scene(face_model, yaw, 15.0, garbage=True)
    corr = load_correspondence()
    fused = fit_landmarks(face_model, batch, corr, SETTINGS, init)
    assert float(fused.landmark_trust[0]) == 0.0  # the profile and the disagreement both say: not MediaPipe
    assert nme(fitted68(face_model, fused), truth) < 2.5
    # the same start without fusion follows the garbage: what the fusion prevents
    plain = fit_landmarks(face_model, batch, corr, NO_FUSION, init)
    assert plain.landmark_trust is None
    assert nme(fitted68(face_model, plain), truth) > 10.0


def test_frontal_garbage_is_caught_by_the_disagreement(face_model):
    batch, init, truth = scene(face_model, 10.0, -5.0, garbage=True)
    corr = load_correspondence()
    fused = fit_landmarks(face_model, batch, corr, SETTINGS, init)
    assert float(fused.landmark_trust[0]) == 0.0
    assert nme(fitted68(face_model, fused), truth) < 2.5


def test_frontal_face_keeps_mediapipe(face_model):
    """MediaPipe right and the head frontal: full trust, and the dense points still shape the fit (the
    fused fit is as close to MediaPipe's points as the fit to MediaPipe's points alone)."""
    batch, init, truth = scene(face_model, 10.0, -5.0, garbage=False)
    corr = load_correspondence()
    fused = fit_landmarks(face_model, batch, corr, SETTINGS, init)
    plain = fit_landmarks(face_model, batch, corr, NO_FUSION, init)
    assert float(fused.landmark_trust[0]) == 1.0
    assert float(fused.landmark_error[0]) < float(plain.landmark_error[0]) + 0.5  # crop px against MediaPipe
    assert nme(fitted68(face_model, fused), truth) < 2.0


def test_trust_ramps_with_yaw_and_disagreement(face_model):
    corr = load_correspondence()
    mp68 = mediapipe_to_68(face_model, corr)
    assert mp68.shape == (68,) and len(set(mp68.tolist())) > 60  # nearly one MediaPipe point per iBUG point
    s = FusionSettings(yaw_full_deg=40.0, yaw_zero_deg=60.0, disagree_full=0.05, disagree_zero=0.15)
    uv = torch.rand(1, 478, 2, generator=torch.Generator().manual_seed(0)) * 100
    p68 = uv[:, mp68].clone()  # agreeing exactly at the 68 places
    yaws = torch.tensor([0.0, 40.0, 50.0, -50.0, 60.0, 89.0])
    got = mediapipe_trust(uv.expand(6, -1, -1), p68.expand(6, -1, -1), yaws, mp68, s)
    np.testing.assert_allclose(got.numpy(), [1, 1, 0.5, 0.5, 0, 0], atol=1e-6)
    box = float((p68[0].amax(0) - p68[0].amin(0)).prod().sqrt())
    shifted = uv.clone()
    shifted[:, mp68] += torch.tensor([0.10 * box, 0.0])  # 10 % of the box: halfway down the ramp
    assert float(mediapipe_trust(shifted, p68, torch.zeros(1), mp68, s)[0]) == pytest.approx(0.5, abs=1e-4)


def test_photometric_polish_keeps_the_fusion(face_model):
    """The polish's landmark term keeps the trust and the regressor's points: on the garbage profile it
    stays on the regressor's 68 points (the blank image gives its photometric term nothing to say)."""
    from fitting.rendering.renderer import Renderer
    from fitting.stages.photometric import photometric_refine

    batch, init, truth = scene(face_model, 75.0, 15.0, garbage=True)
    corr = load_correspondence()
    settings = dataclasses.replace(SETTINGS, photometric=True, photometric_steps=10, photometric_size=96)
    fused = fit_landmarks(face_model, batch, corr, settings, init)
    polished = photometric_refine(face_model, batch, corr, fused, settings, Renderer("cpu"))
    assert nme(fitted68(face_model, polished), truth) < 2.5
    assert torch.isfinite(polished.landmark_error).all()


def test_medium_targets_follow_the_trust(face_model):
    """MediaPipe untrusted on the garbage profile: the medium stage does not pull the mesh to its points
    (with the trust taken away, it does)."""
    from fitting.stages import medium as medium_stage
    from fitting.stages.context import FitContext
    from fitting.stages.medium import MediumSettings

    batch, init, truth = scene(face_model, 75.0, 15.0, garbage=True)
    corr = load_correspondence()
    coarse = fit_landmarks(face_model, batch, corr, SETTINGS, init)
    context = FitContext(model=face_model, correspondence=corr, renderer=None, device=face_model.device,
                         settings={"medium": MediumSettings()})
    kept = medium_stage.run(context, batch, coarse).vertices
    assert float((kept - coarse.vertices).norm(dim=-1).max()) < 0.01  # mm
    pulled = medium_stage.run(context, batch, dataclasses.replace(coarse, landmark_trust=None)).vertices
    assert float((pulled - coarse.vertices).norm(dim=-1).max()) > 1.0


def test_rendered_profile_with_garbage_mediapipe_follows_the_real_regressor(face_model, closed_model):
    """A rendered face at 70 degrees, read by the real 3DDFA_V2 network; MediaPipe's points are the true
    surface points shuffled (right box, wrong places). The fused fit lands on the model's own 68 points;
    MediaPipe's points alone do not."""
    import sys
    from pathlib import Path

    from fitting.bench.align import nme_percent, to_photo
    from fitting.bench.common import _generator
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from fitting.stages.coarse import initial_guess
    from fitting.stages.context import FitContext
    from fitting.stages.initializers import RegressorInitializer
    from landmarks.detector import FaceLandmarks

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "landmarks"))
    from shared_3ddfa import DDFA_DIR

    sf = _generator(closed_model)((7, 0), size=384, fov_deg=DEFAULT_FOV, yaw_deg=70.0, pitch_deg=10.0)
    truth = np.asarray(sf.params["landmarks68_uvd"])[:, :2]
    corr = load_correspondence()
    nv = face_model.n_vertices
    pts = sf.camera.project(corr.points(torch.as_tensor(sf.verts_model[:nv])[None]))[0].numpy()
    pts = pts[np.random.default_rng(0).permutation(len(pts))].astype(np.float32)
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    face = FaceLandmarks(points=pts, bbox=(*lo, *hi), image_size=(384, 384))
    crop = crop_face(sf.image, face, CROP, "profile", DEFAULT_FOV)
    batch = DetectionBatch.stack([crop])
    context = FitContext(model=face_model, correspondence=corr, renderer=None, device=face_model.device,
                         initializer=RegressorInitializer(DDFA_DIR))
    init = initial_guess(context, batch)
    fused = fit_landmarks(face_model, batch, corr, CoarseSettings(photometric=False), init)
    plain = fit_landmarks(face_model, batch, corr, CoarseSettings(photometric=False, fusion=FusionSettings(
        enabled=False)), init)
    regressor = nme_percent(to_photo(init.points68[0].numpy(), crop), truth)
    got = nme_percent(to_photo(fitted68(face_model, fused).numpy(), crop), truth)
    assert float(fused.landmark_trust[0]) == 0.0
    # measured: fused 2.84 %, the regressor's own points 6.45 %, MediaPipe's garbage alone 35.6 %
    assert got < 5.0 and got < regressor, (got, regressor)
    assert nme_percent(to_photo(fitted68(face_model, plain).numpy(), crop), truth) > 10.0

