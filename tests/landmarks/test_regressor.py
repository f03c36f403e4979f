"""The 3DDFA_V2 regressor against numbers computed once with the upstream code.

How the reference numbers were made (not part of the project): the upstream repository
cleardusk/3DDFA_V2 at 1b6c67601abffc1e9f248b291708aef0e43b55ae, its ``models/mobilenet_v1.py``,
``utils/tddfa_util.py`` (``load_model``, ``ToTensorGjz``, ``NormalizeGjz``, ``_parse_param``,
``similar_transform``) and ``utils/functions.py`` (``crop_img``, ``parse_roi_box_from_bbox``,
``parse_roi_box_from_landmark``), run in a scratch folder with torch 2.13 (CPU) on
``07_man_yaw45_right.jpg`` decoded by Pillow and turned to BGR (what ``cv2.imread`` gives), with
``mobilenet_05(num_classes=62)`` loading ``mb05_120x120.pth`` and the 68-point bases of
``keypoint_model.npz`` in place of ``bfm_noneck_v3.pkl`` (the same formula as ``TDDFA.recon_vers``):
``TDDFA.__call__`` on the face box (x0, y0, x1, y1) = (330, 240, 680, 630) in upstream's pixels
(integer pixel centres), then again with the ROI from its own 68 points (crop policy 'landmark').
"""
from __future__ import annotations

import numpy as np
import pytest

from landmarks import load_image, to_uint8
from landmarks.regressor import FaceRegressor, MobileNetV1, roi_from_box
from landmarks.regressor_files import find_regressor_files

from shared_3ddfa import DDFA_DIR
from shared_photos import FACES

UPSTREAM_BOX = np.array([330.0, 240.0, 680.0, 630.0])
# Our pixels are continuous (pixel centres at +0.5); upstream's are integer-centred.
HALF = 0.5
# TDDFA.__call__, first pass: the ROI from the box and the network's 62 normalised outputs.
UPSTREAM_ROI_1 = np.array([213.0, 194.8, 797.0, 778.8])
UPSTREAM_OUT_1 = np.array([
    -2.3392220e-01, -1.6954443e+00, 9.6120070e-01, -8.7681760e-01, 7.2456470e-01, -1.1982026e+00,
    1.4715539e+00, -6.6467210e-01, -9.8722000e-01, -2.5764980e-01, -1.4136540e-01, 6.3000000e-06,
    1.6034541e+00, 1.1623760e-01, -1.2108167e+00, -3.3106710e-01, -1.9948400e-01, -3.5914350e-01,
    9.8792060e-01, -6.4628490e-01, 2.1720520e-01, -6.7625610e-01, -3.5526300e-02, 1.5671890e-01,
    2.7705900e-01, 2.1672340e-01, 6.2762260e-01, -2.5887000e-02, 4.0880000e-03, 4.7177600e-02,
    7.5563960e-01, -2.1700850e-01, 1.4433040e-01, -4.5574210e-01, -9.7742500e-02, 3.8700140e-01,
    1.4913400e-02, -1.4605480e-01, 1.2766600e-01, 4.0704700e-02, -1.7667160e-01, -1.0679280e-01,
    -1.4239430e-01, 2.5291760e-01, 5.6550300e-02, -4.8890000e-02, 1.0504080e-01, 9.9484000e-03,
    2.3961960e-01, -1.9195700e-01, -1.1870400e-02, 7.1936200e-02, 3.5734980e-01, 3.7722110e-01,
    5.6598700e-02, 1.0168250e-01, -1.5057390e-01, 6.8843290e-01, 1.0815023e+00, -1.0998520e-01,
    1.1071350e-01, -2.1262700e-02])
# recon_vers points (x, y, z; upstream pixels) of iBUG points 0, 8, 16, 30, 36, 45, 48, 54 (jaw ends,
# chin, nose tip, outer eye corners, mouth corners), after each pass, and the second pass's ROI.
SELECTED = [0, 8, 16, 30, 36, 45, 48, 54]
UPSTREAM_POINTS_1 = np.array([
    [299.8466, 412.9324, 310.4805], [642.782, 639.0373, 261.1445], [522.2775, 349.7498, 0.0],
    [670.7041, 415.0422, 331.6636], [489.3842, 362.7596, 355.5148], [619.4581, 326.127, 174.4032],
    [563.9576, 525.9601, 327.648], [651.6164, 500.9943, 203.5713]])
UPSTREAM_ROI_2 = np.array([221.121462, 191.1339132, 749.4293192, 719.4417704])
UPSTREAM_POINTS_2 = np.array([
    [300.0597, 417.0433, 308.9294], [645.0058, 636.4559, 281.2797], [525.2098, 373.4029, 0.0],
    [669.3488, 410.7538, 336.6674], [487.4152, 360.407, 353.9689], [619.5138, 335.0883, 173.2182],
    [556.728, 519.1077, 337.9535], [649.8098, 501.8905, 209.1202]])
# Points: upstream computes in float32, we in float64 after the network; 1e-3 px is far below what
# a wrong crop, flip or offset would move them (whole pixels).
POINT_TOL_PX = 1e-3


@pytest.fixture(scope="module")
def regressor():
    return FaceRegressor(find_regressor_files(DDFA_DIR, download=False))


@pytest.fixture(scope="module")
def photo():
    return to_uint8(load_image(FACES / "07_man_yaw45_right.jpg").pixels)


def _to_upstream(points):
    return points - np.array([HALF, HALF, 0.0])


def test_roi_from_box_matches_upstream():
    assert np.allclose(roi_from_box(UPSTREAM_BOX[None])[0], UPSTREAM_ROI_1, atol=1e-9)


def test_network_reproduces_upstream(regressor, photo):
    found = regressor(photo, UPSTREAM_BOX[None] + HALF, passes=1)
    assert np.allclose(found.rois[0] - HALF, UPSTREAM_ROI_1, atol=1e-9)
    normalised = (found.params[0] - regressor.param_mean.numpy()) / regressor.param_std.numpy()
    assert np.abs(normalised - UPSTREAM_OUT_1).max() < 1e-4
    assert np.abs(_to_upstream(found.points[0, SELECTED]) - UPSTREAM_POINTS_1).max() < POINT_TOL_PX


def test_second_pass_from_own_points_reproduces_upstream(regressor, photo):
    found = regressor(photo, UPSTREAM_BOX[None] + HALF, passes=2)
    assert np.abs(found.rois[0] - HALF - UPSTREAM_ROI_2).max() < POINT_TOL_PX
    assert np.abs(_to_upstream(found.points[0, SELECTED]) - UPSTREAM_POINTS_2).max() < POINT_TOL_PX


def test_pose_is_a_rotation_turned_like_the_photo(regressor, photo):
    found = regressor(photo, UPSTREAM_BOX[None] + HALF)
    r = found.rotation[0].astype(np.float64)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-5) and np.linalg.det(r) > 0.999
    # The man turns to his own left by 40-50 degrees (SOURCES.md): the nose (+z) points to image right.
    yaw = np.degrees(np.arcsin(r[0, 2]))
    assert 35 < yaw < 60


def test_batch_of_faces_equals_one_at_a_time(regressor, photo):
    boxes = np.stack([UPSTREAM_BOX, UPSTREAM_BOX + [20, -10, 30, 5]]) + HALF
    both = regressor(photo, boxes)
    for i in range(2):
        one = regressor(photo, boxes[i:i + 1])
        assert np.abs(both.points[i] - one.points[0]).max() < 1e-3


def test_several_images_in_one_call_equal_one_at_a_time(regressor, photo):
    """read_images (a video's frames: one network call per pass) gives each image's own reading, in order."""
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    w = photo.shape[1]
    box = UPSTREAM_BOX + HALF
    mirror_box = np.array([w - box[2], box[1], w - box[0], box[3]])
    both = regressor.read_images([photo, mirrored], np.stack([box, mirror_box])[:, None])
    for i, (img, b) in enumerate(((photo, box), (mirrored, mirror_box))):
        one = regressor(img, b[None])
        assert np.abs(both.points[i] - one.points[0]).max() < 1e-3
        assert np.allclose(both.rois[i], one.rois[0], atol=1e-6)
    assert np.abs(both.points[0, :, 0] - both.points[1, :, 0]).max() > 10  # two different images, not one twice


def test_float_image_reads_like_the_8_bit_one(regressor, photo):
    as_float = photo.astype(np.float32) / 255.0
    a = regressor(photo, UPSTREAM_BOX[None] + HALF).points
    b = regressor(as_float, UPSTREAM_BOX[None] + HALF).points
    # The 8-bit resize rounds to whole grey levels: a fraction of a pixel on the points.
    assert np.abs(a - b)[..., :2].max() < 1.0


def test_wrong_checkpoint_is_one_clear_line(tmp_path):
    import torch
    from landmarks.regressor_files import RegressorFilesError
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(RegressorFilesError) as err:
        MobileNetV1().load_published(tmp_path / "bad.pth")
    assert "\n" not in str(err.value) and "not the MobileNet" in str(err.value)
