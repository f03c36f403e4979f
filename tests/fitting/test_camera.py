"""Camera: projection round trips, rotation helpers, framing a face."""
import math

import numpy as np
import pytest
import torch

from fitting.camera import (DEFAULT_FOV, Camera, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle,
                            matrix_to_euler)


def test_from_image_size_fov_on_longer_side():
    cam = Camera.from_image_size(480, 640, fov_deg=40.0, batch=2)
    fx, fy, cx, cy = cam.intrinsics[0].tolist()
    assert cam.intrinsics.shape == (2, 4) and cam.rotation.shape == (2, 3, 3)
    assert fx == pytest.approx(320 / math.tan(math.radians(20)), rel=1e-6) and fy == fx
    assert (cx, cy) == (320.0, 240.0)
    assert 20 <= DEFAULT_FOV <= 45


def test_frontal_face_looks_at_camera():
    cam = Camera.from_image_size(100, 100, distance=500.0)
    nose = torch.tensor([[[0.0, 0.0, 130.0], [10.0, 20.0, 0.0]]])
    uvd = cam.project(nose)
    # nose tip on the optical axis, 370 mm away; +x model (subject's left) -> image right, +y -> image up
    assert uvd[0, 0].tolist() == pytest.approx([50.0, 50.0, 370.0])
    assert uvd[0, 1, 0] > 50 and uvd[0, 1, 1] < 50


def test_project_backproject_round_trip():
    torch.manual_seed(0)
    r = axis_angle_to_matrix(torch.randn(3, 3) * 0.3)
    cam = Camera.from_image_size(64, 80, batch=3, rotation=None)
    cam = cam.with_pose(r, cam.translation)
    x = torch.randn(3, 50, 3) * 40
    uvd = cam.project(x)
    back = cam.backproject(uvd[..., :2], uvd[..., 2])
    assert torch.allclose(back, x, atol=1e-3)
    assert torch.allclose(cam.to_model(cam.to_camera(x)), x, atol=1e-4)


def test_axis_angle_round_trip_and_zero():
    aa = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [0.0, 3.0, 0.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    r = axis_angle_to_matrix(aa)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(r), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(matrix_to_axis_angle(r), aa, atol=1e-6)
    # gradient is finite at zero
    z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_euler_axes_and_inverse():
    nose = torch.tensor([0.0, 0.0, 1.0])
    yaw = euler_to_matrix(torch.tensor([30.0]), torch.tensor([0.0]), torch.tensor([0.0]))[0] @ nose
    pitch = euler_to_matrix(torch.tensor([0.0]), torch.tensor([30.0]), torch.tensor([0.0]))[0] @ nose
    assert yaw[0] > 0.49 and abs(yaw[1]) < 1e-6        # positive yaw: nose toward image right
    assert pitch[1] > 0.49 and abs(pitch[0]) < 1e-6    # positive pitch: nose up
    right = euler_to_matrix(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([30.0]))[0] @ torch.tensor([1.0, 0, 0])
    assert right[1] > 0.49                              # positive roll: counter-clockwise
    angles = torch.tensor([[35.0, -10.0, 5.0], [-60.0, 15.0, -8.0]])
    r = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    back = torch.stack(matrix_to_euler(r), -1)
    assert torch.allclose(back, angles, atol=1e-3)


def test_look_at_face_fills_fraction():
    torch.manual_seed(1)
    verts = torch.randn(2, 500, 3) * torch.tensor([60.0, 90.0, 40.0]) + torch.tensor([0.0, 0.0, 70.0])
    r = euler_to_matrix(torch.tensor([0.0, 40.0]), torch.tensor([0.0, 10.0]), torch.tensor([0.0, 0.0]))
    cam = Camera.from_image_size(512, 512, batch=2)
    cam = cam.with_pose(r, cam.translation)
    cam = cam.look_at_face(verts, fill=0.7)
    uv = cam.project(verts)[..., :2]
    size = (uv.amax(1) - uv.amin(1)).amax(-1)
    centre = (uv.amax(1) + uv.amin(1)) / 2
    assert torch.allclose(size, torch.full((2,), 0.7 * 512), rtol=0.02)
    assert torch.allclose(centre, torch.full((2, 2), 256.0), atol=3.0)


def test_crop_is_a_camera_operation():
    """Camera.crop moves the image plane, not the pose: a point projects to (u - x0) * scale in the crop,
    and uncrop gives the photo's camera back."""
    from fitting.camera import crop_intrinsics
    cam = Camera.from_image_size(480, 640, batch=2)
    box = torch.tensor([[100.0, 50.0, 1.5], [-20.0, 10.0, 0.75]])
    crop = cam.crop(box, 256)
    x = torch.randn(2, 30, 3) * 40.0
    photo_uv = cam.project(x)[..., :2]
    crop_uv = crop.project(x)[..., :2]
    torch.testing.assert_close(crop_uv, (photo_uv - box[:, None, :2]) * box[:, None, 2:], rtol=1e-5, atol=1e-3)
    assert (crop.height, crop.width) == (256, 256)
    torch.testing.assert_close(crop.rotation, cam.rotation)
    back = crop.uncrop(box, 480, 640)
    torch.testing.assert_close(back.intrinsics, cam.intrinsics)
    assert (back.height, back.width) == (480, 640)
    # the numpy form (what detections use) agrees with the tensor form
    np_k = crop_intrinsics(cam.intrinsics.numpy().astype(np.float64), box.numpy().astype(np.float64))
    np.testing.assert_allclose(np_k, crop.intrinsics.numpy(), rtol=1e-6)


def test_camera_selects_faces():
    cam = Camera.from_image_size(64, 64, batch=3)
    cam = cam.with_pose(cam.rotation, cam.translation + torch.arange(3.0)[:, None])
    one = cam[1]
    assert one.batch_size == 1 and float(one.translation[0, 0]) == 1.0
    assert cam[torch.tensor([0, 2])].batch_size == 2
