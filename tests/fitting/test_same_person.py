"""Several photos of one person (issue 18): the joint fit (fitting.stages.joint), the ARKit names
(morphable.arkit) and ``fit-face --same-person`` (fitting.cli, fitting.same_person)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from morphable.arkit import ARKIT_NAMES, arkit_names

from test_cli import error_lines, run_cli

VIEWS = 4


# --------------------------------------------------------------------------- ARKit names

def test_arkit_names_cover_the_model(face_model):
    assert len(ARKIT_NAMES) == len(set(ARKIT_NAMES)) == 52
    names = arkit_names(face_model.exp_names)
    assert len(names) == len(set(names)) == face_model.n_exp == 53
    assert names[face_model.exp_names.index("eyeBlink_L")] == "eyeBlinkLeft"
    assert names[face_model.exp_names.index("jawOpen")] == "jawOpen"
    # ICT splits browInnerUp and cheekPuff per side, ARKit does not: those keep ICT's names
    kept = [n for n, ict in zip(names, face_model.exp_names) if n == ict and n not in ARKIT_NAMES]
    assert sorted(kept) == ["browInnerUp_L", "browInnerUp_R", "cheekPuff_L", "cheekPuff_R"]
    # every other ARKit shape but tongueOut has its ICT shape
    assert set(ARKIT_NAMES) - set(names) == {"browInnerUp", "cheekPuff", "tongueOut"}


def test_ict_left_is_the_subjects_left(face_model):
    """ARKit's Left is the subject's left, +x in the model frame: ICT's _L shapes must move vertices there."""
    for name in ("eyeBlink_L", "mouthSmile_L", "browDown_L"):
        moved = face_model.exp_basis[face_model.exp_names.index(name)].norm(dim=-1)
        assert float((face_model.mean[:, 0] * moved).sum() / moved.sum()) > 10.0, name


# --------------------------------------------------------------------------- the joint solve's linear algebra

@pytest.mark.parametrize("coupling", [0.0, 3.0, torch.tensor([3.0, 0.0, 1.0, 0.5], dtype=torch.float64)])
def test_block_tridiagonal_solve_matches_the_whole_matrix(coupling):
    from fitting.stages.joint import _solve_block_tridiagonal
    g = torch.Generator().manual_seed(0)
    n, m, k = 5, 4, 3
    a = torch.randn(n, m, m, generator=g, dtype=torch.float64)
    c = torch.diag(torch.as_tensor(coupling, dtype=torch.float64).expand(m))
    diag = a @ a.transpose(1, 2) + 2 * c + 0.1 * torch.eye(m, dtype=torch.float64)
    rhs = torch.randn(n, m, k, generator=g, dtype=torch.float64)
    whole = torch.block_diag(*diag)
    for v in range(n - 1):
        whole[v * m:(v + 1) * m, (v + 1) * m:(v + 2) * m] = -c
        whole[(v + 1) * m:(v + 2) * m, v * m:(v + 1) * m] = -c
    expected = torch.linalg.solve(whole, rhs.reshape(n * m, k)).reshape(n, m, k)
    torch.testing.assert_close(_solve_block_tridiagonal(diag, coupling, rhs), expected)


def test_view_agreement_trusts_what_the_views_share_and_not_one_views_error():
    """A 3 mm offset of one point in every view (seen from each view's side) keeps its weight; the same
    offset in one view alone loses it there (and hardly elsewhere); exact targets keep every weight."""
    from fitting.rotation import axis_angle_to_matrix
    from fitting.stages.joint import view_agreement
    from fitting.stages.landmark_fit import reprojection_residual

    torch.manual_seed(0)
    n, k = 4, 30
    points = (torch.randn(k, 3) * 40.0).expand(n, -1, -1).contiguous()  # mm, model frame
    yaw = torch.tensor([-0.6, -0.2, 0.2, 0.6])
    rot = axis_angle_to_matrix(torch.stack([torch.zeros(n), yaw, torch.zeros(n)], -1))
    t = torch.tensor([0.0, 0.0, -600.0]).expand(n, -1)
    intrinsics = torch.tensor([1000.0, 1000.0, 256.0, 256.0]).expand(n, -1)
    weights = torch.ones(n, k)

    def targets(pts):  # the exact projections of pts
        return reprojection_residual(pts, rot, t, torch.zeros(n, k, 2), intrinsics)

    uv = targets(points)
    assert torch.allclose(view_agreement(points, rot, t, uv, intrinsics, weights, 1.0), torch.ones(n, k))
    shared = points.clone()
    shared[:, 5] += torch.tensor([3.0, -2.0, 0.0])  # the same model-frame offset in every view
    f = view_agreement(points, rot, t, targets(shared), intrinsics, weights, 1.0)
    assert float(f[:, 5].min()) > 0.95  # one 3D offset explains every view's residual
    one = points.clone()
    one[2, 5] += torch.tensor([3.0, -2.0, 0.0])  # in view 2 alone
    f = view_agreement(points, rot, t, targets(one), intrinsics, weights, 1.0)
    assert float(f[2, 5]) < 0.3 and float(f[[0, 1, 3], 5].min()) > 2 * float(f[2, 5])
    assert torch.allclose(f[:, :5], torch.ones(n, 5))


# --------------------------------------------------------------------------- joint fit on synthetic views

@pytest.fixture(scope="module")
def person(face_model, closed_model):
    """One synthetic person, VIEWS photos at random poses and expressions, through MediaPipe."""
    from fitting.bench.same_person import make_people
    (p,) = make_people(face_model, closed_model, 1, VIEWS, seed=3, size=384, yaw_max=40.0, progress=False)
    assert all(f.crop is not None for f in p["views"]), "MediaPipe missed a synthetic view"
    return p


def _neutral_error(face_model, id_coeffs, truth_id) -> float:
    from fitting.bench.common import vertex_errors
    zeros = torch.zeros(1, face_model.n_exp)
    fit = face_model(id_coeffs.reshape(1, -1), zeros)[0].numpy()
    truth = face_model(truth_id.reshape(1, -1), zeros)[0].numpy()
    return float(vertex_errors(fit, truth).mean())


def test_one_view_is_the_single_view_fit(face_model, person):
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import fit_landmarks
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    batch = DetectionBatch.stack([person["views"][0].crop])
    settings = SamePersonSettings()
    joint = fit_same_person(face_model, batch, corr, settings)
    single = fit_landmarks(face_model, batch, corr, settings.coarse)
    torch.testing.assert_close(joint.id_coeffs, single.id_coeffs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(joint.exp_coeffs, single.exp_coeffs, atol=1e-4, rtol=1e-4)
    assert float(joint.disagreement_mm[0]) < 1e-3
    assert joint.vertices.shape == (1, face_model.n_vertices, 3)
    assert joint.neutral.shape == (face_model.n_vertices, 3)


def test_joint_fit_recovers_identity_better_than_one_view(face_model, person):
    """Exact landmarks (the true projections of the table's points): the joint solve must pool the
    views. With MediaPipe's points the gain is smaller (its error is largely the same in every view
    of a person; `python -m fitting.bench same-person` measures both) and is not asserted here."""
    import dataclasses
    from fitting.bench.common import oracle_crop
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import fit_landmarks
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    coarse = dataclasses.replace(SamePersonSettings().coarse, landmark_offsets=False)
    settings = SamePersonSettings(coarse=coarse)
    batch = DetectionBatch.stack([oracle_crop(f, corr) for f in person["views"]])
    joint = fit_same_person(face_model, batch, corr, settings)
    single = fit_landmarks(face_model, batch, corr, coarse)
    single_err = np.mean([_neutral_error(face_model, a, person["id"]) for a in single.id_coeffs])
    joint_err = _neutral_error(face_model, joint.id_coeffs, person["id"])
    assert joint_err < 0.85 * single_err, (joint_err, single_err)
    # per-view expressions stay per view and in bounds; the poses are each view's
    assert joint.exp_coeffs.shape == (VIEWS, face_model.n_exp)
    assert float(joint.exp_coeffs.min()) >= 0.0 and float(joint.exp_coeffs.max()) <= 1.0
    assert float((joint.exp_coeffs - person["exp"]).abs().mean()) < 0.1
    assert float(joint.landmark_error.max()) < 2.0  # crop pixels, exact points


def test_joint_fit_fuses_the_regressor_per_view(face_model):
    """Two views of one person, one frontal, one a profile whose MediaPipe points are garbage (a mesh in
    the wrong place): with the regressor's points (fitting.stages.fusion) the joint fit distrusts that
    view's MediaPipe points and follows the regressor there, as the single-view fit does; without them
    the garbage pulls the shared identity."""
    import dataclasses
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import CoarseInit
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person
    from test_fusion import SETTINGS, fitted68, nme, scene

    views = [scene(face_model, 10.0, -5.0, garbage=False, seed=5), scene(face_model, 75.0, 10.0, garbage=True, seed=5)]
    batches = [v[0] for v in views]
    batch = DetectionBatch(crops=[None, None], **{f: torch.cat([getattr(b, f) for b in batches]) for f in
                                                  ("images", "uv", "rel_depth", "intrinsics", "region_labels")},
                           groups=batches[0].groups)
    init = CoarseInit(**{f: torch.cat([getattr(v[1], f) for v in views]) for f in ("rotation", "translation",
                                                                                  "points68")})
    truth_id = torch.randn(1, face_model.n_id, generator=torch.Generator().manual_seed(5)).clamp(-2, 2)
    # the fusion alone: the views' agreement (agreement_mm) also resists the garbage view, plain 3.95 -> 3.05 mm
    settings = SamePersonSettings(coarse=SETTINGS, check_disagreement=False, agreement_mm=None)
    corr = load_correspondence()
    fused = fit_same_person(face_model, batch, corr, settings, init=init)
    plain = fit_same_person(face_model, batch, corr, settings,
                            init=dataclasses.replace(init, points68=None))  # the same start pose, no fusion
    n_id = fused.id_coeffs.shape[0]
    fused_err = _neutral_error(face_model, fused.id_coeffs, truth_id[0, :n_id])
    plain_err = _neutral_error(face_model, plain.id_coeffs, truth_id[0, :n_id])
    assert fused_err < 0.5 * plain_err, (fused_err, plain_err)

    class Fit:  # what fitted68 reads of a fit: its camera and vertices
        def __init__(self, fit, i):
            self.camera, self.vertices = fit.camera[i], fit.vertices[i:i + 1]
    for i, (_, _, truth) in enumerate(views):
        assert nme(fitted68(face_model, Fit(fused, i)), truth) < 2.5
    # the detail views start from the joint fit as from a single-view coarse result, the regressor's points
    # and weights included (pipeline.assemble measures the landmark error against the source it followed)
    from fitting.pipeline import landmark_references
    coarse = fused.coarse_result(torch.tensor([1]))
    assert coarse.points68.shape == (1, 68, 2) and coarse.weights68.shape == (1, 68)
    assert landmark_references(coarse, batch.mediapipe_weight[1:] * torch.ones(1, batch.uv.shape[1]), [True]) \
        == ["regressor68"]  # the garbage profile was fitted to the regressor's points


# --------------------------------------------------------------------------- fit-face --same-person

def test_cli_same_person_one_photo_and_a_faceless_one(tmp_path, good_photos, bad_inputs, model_args):
    """N = 1 works; a photo without a face is reported and left out (exit 1), the files are written."""
    out = tmp_path / "me"
    res = run_cli("--same-person", str(good_photos[0]), str(bad_inputs["grey"]), "--out", str(out), *model_args,
                  cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "grey" in errors[0] and "no face" in errors[0], res.stderr
    for name in ("identity.obj", "identity.ply", "identity_params.json", "expressions.csv", "animation.glb"):
        assert (out / name).is_file(), name
    assert (out / "animation.glb").read_bytes()[:4] == b"glTF"  # the format is tests/fitting/test_animation_glb.py's
    rows = list(csv.reader((out / "expressions.csv").open()))
    assert len(rows) == 2  # header + the one photo
    header, row = rows
    assert header[:8] == ["source", "time_s", "yaw_deg", "pitch_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm"]
    assert len(header) == 8 + 53 and "eyeBlinkLeft" in header and "eyeBlink_L" not in header
    assert row[0] == str(good_photos[0]) and row[1] == ""  # a photo has no time
    weights = np.array(row[8:], float)
    assert ((weights >= 0) & (weights <= 1)).all()
    assert float(row[7]) < 0  # the face is in front of the camera (looking down -z)
    params = json.loads((out / "identity_params.json").read_text())
    assert len(params["id_coeffs"]) == 100 and len(params["views"]) == 1
    assert params["skipped"][0]["name"] == "grey"
    import cv2  # the fit shaded over the photo, for a person to look at: one tile for the one photo
    from fitting.same_person import OVERLAY_SIZE
    sheet = cv2.imread(str(out / "overlays.png"))
    assert sheet.shape == (OVERLAY_SIZE, OVERLAY_SIZE, 3) and sheet.std() > 10
    assert not (out / "overlay.mp4").exists()
    assert (out / "identity.obj").read_text().count("\nf ") > 1000
    # the texture from the photos (one here) on the identity, and the fine stage on the most frontal (the one)
    obj = (out / "identity.obj").read_text()
    assert "usemtl identity" in obj and "\nvt " in obj and "identity.png" in (out / "identity.mtl").read_text()
    texture = cv2.imread(str(out / "identity.png"))
    assert texture.shape == (512, 1024, 3) and texture.std() > 5
    name = good_photos[0].stem
    assert params["texture"]["reference"] == name and params["detail_views"] == [name]
    assert 0.05 < params["texture"]["seen_fraction"] < 0.5 and params["texture"]["best_view_share"] == [1.0]
    for part in ("fine.obj", "fine.png", "medium.obj", "report.png", "params.json"):
        assert (out / "detail" / name / part).is_file(), part


def test_cli_same_person_refuses_all_faces(tmp_path, good_photos):
    res = run_cli("--same-person", "--all-faces", str(good_photos[0]), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2
    assert any("--all-faces" in line for line in error_lines(res.stderr)), res.stderr


def test_cli_frame_meshes_need_several_views(tmp_path, good_photos):
    res = run_cli("--frame-meshes", str(good_photos[0]), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2
    assert any("--frame-meshes" in line for line in error_lines(res.stderr)), res.stderr


def test_frame_meshes_are_each_views_medium_stage(face_model, person):
    """Every view's medium mesh is the medium stage run on that view of the joint fit (chunks change
    nothing), a small deformation that brings the mesh closer to the view's landmarks."""
    from fitting.detections import DetectionBatch
    from fitting.stages import medium
    from fitting.stages.context import FitContext
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person, frame_meshes

    corr = load_correspondence()
    batch = DetectionBatch.stack([v.crop for v in person["views"]])
    fit = fit_same_person(face_model, batch, corr, SamePersonSettings(check_disagreement=False))
    meshes = frame_meshes(face_model, batch, corr, fit, chunk=3)  # chunks of 3 and 1 views
    assert meshes.shape == fit.vertices.shape
    context = FitContext(model=face_model, correspondence=corr, renderer=None, device=fit.vertices.device,
                         settings={"medium": medium.MediumSettings()})
    whole = medium.run(context, batch, fit.coarse_result(torch.arange(VIEWS)))
    torch.testing.assert_close(meshes, whole.vertices, atol=1e-4, rtol=0)
    moved = (meshes - fit.vertices).norm(dim=-1).amax(-1)
    assert bool((moved > 0.01).all()) and bool((moved < 5.0).all()), moved  # mm
    assert bool((whole.landmark_error_after < whole.landmark_error_before).all())
    with pytest.raises(TypeError):
        batch[0]


def test_joint_photometric_polish_keeps_one_identity(face_model, person):
    """The polish on several views with ``shared_identity``: one identity for all, per-view poses."""
    import dataclasses
    from fitting.detections import DetectionBatch
    from fitting.rendering.renderer import Renderer
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    base = SamePersonSettings(check_disagreement=False)
    settings = dataclasses.replace(base, photometric=True, polish_steps=4,
                                   coarse=dataclasses.replace(base.coarse, photometric_size=96))
    batch = DetectionBatch.stack([f.crop for f in person["views"][:2]])
    ls = fit_same_person(face_model, batch, corr, base)
    polished = fit_same_person(face_model, batch, corr, settings, renderer=Renderer("cpu"))
    assert polished.id_coeffs.shape == (face_model.n_id,)
    assert not torch.equal(polished.id_coeffs, ls.id_coeffs)  # the polish moved it
    assert float((polished.id_coeffs - ls.id_coeffs).abs().max()) < 0.5  # a polish, not a new fit
    # every view's face is the shared identity with its own expression
    torch.testing.assert_close(polished.vertices, face_model(polished.id_coeffs.expand(2, -1), polished.exp_coeffs))
    assert float(polished.landmark_error.max()) < 3.0 * float(ls.landmark_error.max())


def test_joint_polish_counts_the_landmarks_as_one_view_and_skips_video_frames(face_model, person, monkeypatch):
    """The joint polish gets every view's landmark term divided by the number of views
    (``polish_landmarks_as_one_view``) and scaled by ``polish_landmark_scale``, the identity prior scaled by
    ``polish_id_prior_scale``, its own steps, erosion and outlier test; a video's frames (``ordered``) get no polish unless
    ``photometric_video``."""
    import dataclasses
    import fitting.stages.photometric as photometric
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    calls = []

    def fake_refine(model, batch, corr, coarse, settings, renderer, **kwargs):
        calls.append(dict(kwargs, steps=settings.photometric_steps, erode=settings.photometric_erode_px,
                          outliers=settings.photometric_outlier_ratio))
        return coarse
    monkeypatch.setattr(photometric, "photometric_refine", fake_refine)
    corr = load_correspondence()
    batch = DetectionBatch.stack([f.crop for f in person["views"][:3]])
    settings = SamePersonSettings(check_disagreement=False)
    assert settings.photometric and not settings.photometric_video  # photos are polished, frames are not
    fit_same_person(face_model, batch, corr, settings, renderer=object())
    assert calls[-1] == {"shared_identity": True, "landmark_scale": pytest.approx(settings.polish_landmark_scale / 3),
                         "id_prior_scale": settings.polish_id_prior_scale, "steps": settings.polish_steps,
                         "erode": settings.polish_erode_px, "outliers": settings.polish_outlier_ratio}
    assert settings.polish_steps != settings.coarse.photometric_steps  # the joint polish's own
    fit_same_person(face_model, batch, corr, dataclasses.replace(settings, polish_landmarks_as_one_view=False),
                    renderer=object())
    assert calls[-1]["landmark_scale"] == pytest.approx(settings.polish_landmark_scale)
    fit_same_person(face_model, batch, corr, settings, renderer=object(), ordered=True)
    assert len(calls) == 2
    fit_same_person(face_model, batch, corr, dataclasses.replace(settings, photometric_video=True),
                    renderer=object(), ordered=True)
    assert len(calls) == 3


def test_disagreement_compares_least_squares_with_least_squares(face_model, person, monkeypatch):
    """The disagreement check measures each view's own least squares against the joint least squares: a
    polish that moves the shared identity (here by a fake, a whole unit on every coefficient) does not
    move the distances."""
    import dataclasses
    import fitting.stages.photometric as photometric
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    def far_polish(model, batch, corr, coarse, settings, renderer, **kwargs):
        return dataclasses.replace(coarse, id_coeffs=coarse.id_coeffs + 1.0)
    corr = load_correspondence()
    batch = DetectionBatch.stack([f.crop for f in person["views"][:3]])
    plain = fit_same_person(face_model, batch, corr, SamePersonSettings(photometric=False))
    monkeypatch.setattr(photometric, "photometric_refine", far_polish)
    polished = fit_same_person(face_model, batch, corr, SamePersonSettings(), renderer=object())
    torch.testing.assert_close(polished.id_coeffs, plain.id_coeffs + 1.0)
    torch.testing.assert_close(polished.disagreement_mm, plain.disagreement_mm)


def test_photos_of_two_people_warn_and_one_persons_do_not(face_model, good_photos, tmp_path):
    """Face descriptors (landmarks.identity) name the photo of another person; a photo and its mirror image
    (one person) raise no warning. The landmark-shape check is off here: it cannot tell these apart."""
    import cv2
    from fitting.api import FaceFitter
    from fitting.stages.joint import SamePersonSettings
    mirror = tmp_path / "mirror.png"
    cv2.imwrite(str(mirror), cv2.imread(str(good_photos[0]))[:, ::-1])
    settings = SamePersonSettings(photometric=False, texture=None, detail=(), check_disagreement=False)
    with FaceFitter(("coarse",), model=face_model) as fitter:
        mixed = fitter.fit_same_person([good_photos[0], mirror, good_photos[1]], settings=settings)
        one = fitter.fit_same_person([good_photos[0], mirror], settings=settings)
    d = [v.face_distance for v in mixed.views]
    assert d[0] < 0.6 and d[1] < 0.6 and d[2] > 0.6, d
    assert len(mixed.warnings) == 1 and mixed.warnings[0].startswith(good_photos[1].stem + ":"), mixed.warnings
    assert "face descriptors" in mixed.warnings[0] and "same person?" in mixed.warnings[0]
    assert mixed.params()["views"][2]["face_distance"] == pytest.approx(d[2])
    assert one.warnings == [] and all(v.face_distance < 0.6 for v in one.views)


# --------------------------------------------------------------------------- videos

@pytest.fixture(scope="module")
def clip(tmp_path_factory, good_photos):
    """A 6-frame MJPEG clip at 10 fps of one photo shifting sideways; frame 3 is plain grey (no face)."""
    import cv2
    img = cv2.imread(str(good_photos[0]))
    scale = 480 / max(img.shape[:2])
    img = cv2.resize(img, (int(img.shape[1] * scale) // 2 * 2, int(img.shape[0] * scale) // 2 * 2))
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (img.shape[1], img.shape[0]))
    for i in range(6):
        writer.write(np.roll(img if i != 3 else np.full_like(img, 128), 3 * i, axis=1))
    writer.release()
    return path


def test_read_frames_every_and_max(clip, bad_inputs, tmp_path):
    from fitting.video import VideoError, frame_rate, is_video, read_frames
    assert is_video(clip) and is_video("A.MP4") and not is_video("a.jpg")
    assert frame_rate(clip) == pytest.approx(10.0)
    frames = list(read_frames(clip, every=2))
    assert [f.index for f in frames] == [0, 2, 4]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    assert frames[0].pixels.dtype == np.uint8 and frames[0].pixels.shape[2] == 3
    assert [f.index for f in read_frames(clip, max_frames=2)] == [0, 1]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bad_inputs["corrupt"].read_bytes())
    with pytest.raises(VideoError):
        list(read_frames(corrupt))


def test_cli_video_frames_and_a_corrupt_video(tmp_path, clip, bad_inputs, model_args):
    """A video means --same-person: a row per frame with its time; the face-less frame and a corrupt
    video are reported and left out (exit 1), the identity is written."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bad_inputs["corrupt"].read_bytes())
    out = tmp_path / "me"
    res = run_cli(str(clip), str(corrupt), "--max-frames", "5", "--detail", "none", "--frame-meshes", "--out", str(out),
                  *model_args, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    errors = error_lines(res.stderr)
    assert any("corrupt.mp4" in e for e in errors) and any("clip#f000003" in e and "no face" in e for e in errors)
    rows = list(csv.reader((out / "expressions.csv").open()))[1:]
    assert [r[1] for r in rows] == ["0.0000", "0.1000", "0.2000", "0.4000"]  # frame 3 has no face
    assert all(r[0] == str(clip) for r in rows)
    assert (out / "identity.obj").is_file() and (out / "identity.png").is_file()
    assert not (out / "detail").exists()  # --detail none
    # --frame-meshes: each frame's medium mesh on identity.ply's vertices, named in identity_params.json
    params = json.loads((out / "identity_params.json").read_text())
    meshes = sorted((out / "frames").iterdir())
    assert [m.name for m in meshes] == [f"clip_f{i:06d}.ply" for i in (0, 1, 2, 4)]
    assert [v["mesh"] for v in params["views"]] == [f"frames/{m.name}" for m in meshes]

    def vertex_count(ply):
        head = ply.read_bytes()[:400].split(b"end_header")[0].decode("ascii")
        return int(head.split("element vertex ")[1].split()[0])
    assert {vertex_count(m) for m in meshes} == {vertex_count(out / "identity.ply")}
    pygltflib = pytest.importorskip("pygltflib")
    gltf = pygltflib.GLTF2().load(str(out / "animation.glb"))
    (anim,) = gltf.animations
    times = gltf.accessors[anim.samplers[0].input]
    assert times.count == len(rows) and times.min == [0.0] and times.max == pytest.approx([0.4])  # the frames' times
    assert anim.samplers[0].interpolation == "LINEAR"
    import cv2  # a video's overlays are a video: one frame per fitted frame
    movie = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert movie.isOpened() and int(movie.get(cv2.CAP_PROP_FRAME_COUNT)) == len(rows)
    assert movie.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0, rel=0.01)  # the median step of 0.1 s


def test_cli_video_without_a_face_is_one_line(tmp_path, model_args):
    """A video whose frames show no face: one error line naming the frames, exit 1, nothing written."""
    import cv2
    path = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for _ in range(3):
        writer.write(np.full((240, 320, 3), 128, np.uint8))
    writer.release()
    out = tmp_path / "me"
    res = run_cli(str(path), "--out", str(out), *model_args, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "no face" in errors[0] and "empty#f000000" in errors[0], res.stderr
    assert not (out / "identity.obj").exists() and not (out / "expressions.csv").exists()


def test_temporal_term_smooths_expressions_only_for_ordered_frames(face_model, person):
    import dataclasses
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    batch = DetectionBatch.stack([f.crop for f in person["views"]])

    def spread(settings, ordered):
        e = fit_same_person(face_model, batch, corr, settings, ordered=ordered).exp_coeffs
        return float((e[1:] - e[:-1]).abs().mean())

    # the temporal term alone: the video's own L1 prior off, as for photos
    same_l1 = dict(check_disagreement=False, ordered_exp_l1=None, ordered_exp_l1_exclude=None)
    free = spread(SamePersonSettings(lambda_temporal_exp=0.0, **same_l1), True)
    stiff = SamePersonSettings(lambda_temporal_exp=1e6, **same_l1)
    assert spread(stiff, True) < 0.05 * free  # held together
    # photos: no order, no term (the views' agreement weighting, photos only, off to compare like with like)
    assert spread(dataclasses.replace(stiff, agreement_mm=None), False) == pytest.approx(free, rel=1e-4)


def test_a_known_identity_is_held(face_model, person):
    """id_coeffs (the bench's oracle rows): the identity stays what it was given; poses and expressions are fitted."""
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    batch = DetectionBatch.stack([f.crop for f in person["views"]])
    settings = SamePersonSettings(check_disagreement=False)
    held = fit_same_person(face_model, batch, corr, settings, id_coeffs=person["id"])
    free = fit_same_person(face_model, batch, corr, settings)
    n_id = settings.coarse.n_id
    torch.testing.assert_close(held.id_coeffs, person["id"][:n_id].to(held.id_coeffs))
    assert float((free.id_coeffs - held.id_coeffs).abs().max()) > 0.1  # the free fit moves it
    assert float(held.exp_coeffs.min()) >= 0.0 and float(held.exp_coeffs.max()) <= 1.0
    assert float(held.landmark_error.max()) < 10.0  # crop pixels: the views' poses were fitted to it


def test_a_video_has_its_own_l1_prior(face_model, person):
    """ordered (a video's frames) takes SamePersonSettings.ordered_exp_l1 and its exclusions; photos the coarse
    stage's: the same frames with a prior of 0 on the video path fit more expression than with a huge one."""
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    corr = load_correspondence()
    batch = DetectionBatch.stack([f.crop for f in person["views"]])
    kw = dict(check_disagreement=False, lambda_temporal_exp=0.0, ordered_exp_l1_exclude=())

    def total(l1, ordered):
        s = SamePersonSettings(ordered_exp_l1=l1, **kw)
        return float(fit_same_person(face_model, batch, corr, s, ordered=ordered).exp_coeffs.sum())

    assert total(1e6, True) < 0.2 * total(0.0, True)
    assert total(1e6, False) == pytest.approx(total(0.0, False), rel=1e-4)  # photos: the coarse stage's prior


def test_detail_views_by_name_or_the_most_frontal():
    from fitting.stages.joint import detail_views
    euler = torch.tensor([[30.0, 0, 0], [-5.0, 8.0, 40.0], [12.0, -2.0, 0.0]])  # roll does not count
    names = ["a", "b", "c"]
    assert detail_views(names, euler, ("frontal",)) == ([1], [])
    assert detail_views(names, euler, ("c", "frontal", "b", "x")) == ([2, 1], ["x"])
    assert detail_views(names, euler, ()) == ([], [])
