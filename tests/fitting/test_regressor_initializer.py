"""The 3DDFA_V2 regressor as the coarse stage's initialiser (``3ddfa_v2``, and ``auto``, the default)."""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fitting.api import FaceFitter
from fitting.camera import Camera
from fitting.rotation import euler_to_matrix, matrix_to_euler
from fitting.stages.coarse import CoarseSettings
from fitting.stages.initializers import RegressorInitializer, pose_from_points68, resolve_initializer
from landmarks.regressor_files import ENV_DIR, RegressorFilesError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "landmarks"))
from shared_3ddfa import DDFA_DIR  # noqa: E402

CROP = 256
FAST = CoarseSettings(photometric=False)


@pytest.fixture(autouse=True)
def no_regressor_env(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)


@pytest.mark.parametrize("yaw", [0.0, 40.0, 70.0, -85.0])
def test_pose_from_68_points_recovers_a_known_pose(face_model, yaw):
    """The mean face's 68 points seen by a known camera, written as the regressor writes them (pixels,
    depth larger = closer), give back that pose."""
    cam = Camera.from_image_size(CROP, CROP, batch=1, distance=600.0)
    rot = euler_to_matrix(torch.tensor([yaw]), torch.tensor([-10.0]), torch.tensor([5.0]))
    cam = cam.with_pose(rot, torch.tensor([[15.0, -10.0, -600.0]]))
    ids = face_model.landmark_sets["multipie68"]
    uvd = cam.project(face_model.mean[ids][None])[0]
    scale = cam.intrinsics[0, 0] / 600.0  # pixels per mm at the face: the regressor's depth is in pixels
    points = torch.stack([uvd[:, 0], uvd[:, 1], -(uvd[:, 2] - uvd[:, 2].max()) * scale], -1)
    r, t = pose_from_points68(face_model, points, cam.intrinsics[0])
    got = torch.stack(matrix_to_euler(r[None]), -1)[0]
    assert torch.allclose(got, torch.tensor([yaw, -10.0, 5.0]), atol=0.5), got
    assert torch.allclose(t, torch.tensor([15.0, -10.0, -600.0]), atol=2.0), t


def test_pose_from_68_points_batched_equals_one_at_a_time(face_model):
    """B faces at once (a video's frames) give each face's own pose."""
    yaws = [0.0, 35.0, -60.0]
    cam = Camera.from_image_size(CROP, CROP, batch=1, distance=600.0)
    ids = face_model.landmark_sets["multipie68"]
    points, poses = [], []
    for yaw in yaws:
        rot = euler_to_matrix(torch.tensor([yaw]), torch.tensor([5.0]), torch.tensor([-3.0]))
        c = cam.with_pose(rot, torch.tensor([[-5.0, 8.0, -550.0]]))
        uvd = c.project(face_model.mean[ids][None])[0]
        scale = c.intrinsics[0, 0] / 550.0
        points.append(torch.stack([uvd[:, 0], uvd[:, 1], -(uvd[:, 2] - uvd[:, 2].max()) * scale], -1))
        poses.append(pose_from_points68(face_model, points[-1], cam.intrinsics[0]))
    rot, t = pose_from_points68(face_model, torch.stack(points), cam.intrinsics.expand(len(yaws), -1))
    assert rot.shape == (3, 3, 3) and t.shape == (3, 3)
    for i, (r1, t1) in enumerate(poses):
        assert torch.allclose(rot[i], r1, atol=1e-5) and torch.allclose(t[i], t1, atol=1e-3)
    got = torch.stack(matrix_to_euler(rot), -1)[:, 0]
    assert torch.allclose(got, torch.tensor(yaws), atol=0.5), got


def test_auto_is_none_without_the_files(tmp_path):
    assert resolve_initializer("auto") is None  # the session's empty cache, no FACEFIT_3DDFA_DIR


def test_auto_takes_the_regressor_when_its_files_are_there(monkeypatch):
    assert isinstance(resolve_initializer("auto", DDFA_DIR), RegressorInitializer)
    monkeypatch.setenv(ENV_DIR, str(DDFA_DIR))
    assert isinstance(resolve_initializer("auto"), RegressorInitializer)


def test_auto_with_broken_files_warns_and_fits_without(tmp_path, caplog):
    shutil.copy(DDFA_DIR / "mb05_120x120.pth", tmp_path)
    (tmp_path / "keypoint_model.npz").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        assert resolve_initializer("auto", tmp_path) is None
    assert "not using the 3DDFA_V2 initialiser" in caplog.text


def test_named_regressor_without_files_fails_at_construction(face_model, tmp_path):
    with pytest.raises(RegressorFilesError, match="incomplete"):
        FaceFitter(("coarse",), model=face_model, initializer="3ddfa_v2", regressor_dir=tmp_path)


def test_regressor_start_on_a_turned_head(face_model, faces_dir):
    """On the 45-degree photo the start is the regressor's pose (no alternations, no pose iterations: the
    regressor's pose as it is), and the full fit, fused, lies between MediaPipe's points and the regressor's."""
    photo = faces_dir / "07_man_yaw45_right.jpg"
    start_only = dataclasses.replace(FAST, alternations=0, pose_iterations=0)
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=start_only, initializer="3ddfa_v2",
                    regressor_dir=DDFA_DIR) as f:
        started = f.fit(photo)
        init = f.context.initializer
    assert isinstance(init, RegressorInitializer)
    # Independently: the regressor's own rotation on the same crop.
    found = init.read(torch.from_numpy(started.crop.image), torch.from_numpy(started.crop.points))
    regressor_yaw = math.degrees(math.asin(found.rotation[0][0, 2]))
    assert 35 < started.params["pose_deg"]["yaw"] < 60
    assert abs(started.params["pose_deg"]["yaw"] - regressor_yaw) < 6.0  # BFM's and ICT's frames differ a little
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer="3ddfa_v2",
                    regressor_dir=DDFA_DIR) as f:
        full = f.fit(photo)
    with FaceFitter(("coarse",), model=face_model, crop_size=CROP, coarse=FAST, initializer=None) as f:
        plain = f.fit(photo)
    # The full fit fuses MediaPipe's points with the regressor's 68 (fitting.stages.fusion): at 45 degrees
    # the two disagree by about 9 % of the face's size, MediaPipe keeps part of its weight (trust about
    # 0.6) and the regressor's points the rest of theirs (FusionSettings.regressor_share_when_trusted),
    # and the fit moves from MediaPipe's points toward the regressor's (measured: the 68 points' mean
    # distance to the regressor's 18.6 -> 16.9 photo px, 0.016 of the inter-ocular distance).
    assert full.params["landmark_sources"]["regressor68"]
    assert 0.0 < full.params["landmark_sources"]["mediapipe_trust"] < 1.0
    assert full.params["landmark_error_iod"]["coarse"] < plain.params["landmark_error_iod"]["coarse"] + 0.015
    c = full.crop
    regressor68 = found.points[0, :, :2] / c.scale + np.array([c.x0, c.y0])
    gap = lambda r: np.linalg.norm(r.landmarks68["photo_px"] - regressor68, axis=1).mean()  # noqa: E731
    assert gap(full) < gap(plain) - 0.01 * c.landmarks.inter_ocular
    assert abs(full.params["pose_deg"]["yaw"] - plain.params["pose_deg"]["yaw"]) < 3.0
