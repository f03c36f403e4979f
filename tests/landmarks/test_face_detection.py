"""BlazeFace post-processing: SSD anchors, box decoding, weighted NMS, and the two detectors on a photo."""
from __future__ import annotations

import numpy as np
import pytest

from landmarks.face_detection import (FULL_RANGE, SHORT_RANGE, FaceDetector, decode_boxes, ssd_anchors,
                                      weighted_nms)
from landmarks.image import load_image, to_uint8
from shared_photos import FACES


def test_anchor_grids():
    a = ssd_anchors(SHORT_RANGE)
    assert a.shape == (896, 2)
    # stride 8: 16 x 16 cells, two anchors per cell, row-major
    assert np.allclose(a[0], a[1]) and np.allclose(a[0], [1 / 32, 1 / 32]) and np.allclose(a[2], [3 / 32, 1 / 32])
    assert np.allclose(a[511], [31 / 32, 31 / 32])
    # then the three stride-16 layers share one 8 x 8 grid: six anchors per cell
    assert np.allclose(a[512:518], [1 / 16, 1 / 16]) and np.allclose(a[518], [3 / 16, 1 / 16])
    f = ssd_anchors(FULL_RANGE)
    assert f.shape == (2304, 2) and np.allclose(f[0], [1 / 96, 1 / 96]) and np.allclose(f[48], [1 / 96, 3 / 96])


def test_decode_is_offsets_from_the_anchor_in_tensor_pixels():
    anchors = np.array([[0.5, 0.25]], np.float32)
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32.0, 64.0]         # x, y, w, h (x before y) in 128-px tensor pixels
    raw[0, 4:6] = [-12.8, 0.0]                    # keypoint 0
    boxes, kps = decode_boxes(raw, anchors, 128.0)
    assert np.allclose(boxes[0], [0.6 - 0.125, 0.2 - 0.25, 0.6 + 0.125, 0.2 + 0.25])
    assert np.allclose(kps[0, 0], [0.4, 0.25]) and np.allclose(kps[0, 1], [0.5, 0.25])


def test_weighted_nms_merges_overlaps_by_score_and_keeps_the_best_score():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0], [0.8, 0.0, 1.8, 1.0]],
                     np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, axis=1)
    scores = np.array([0.6, 0.9, 0.7, 0.5], np.float32)
    b, k, s = weighted_nms(boxes, kps, scores)
    # best (0.9, box 1) takes box 0 (IoU 0.82) but not box 3 (IoU 0.18); box 2 alone; box 3 alone
    assert np.allclose(s, [0.9, 0.7, 0.5])
    assert np.allclose(b[0], (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5)
    assert np.allclose(k[0, 0], b[0, :2]) and np.allclose(b[1], boxes[2]) and np.allclose(b[2], boxes[3])
    empty = weighted_nms(boxes[:0], kps[:0], scores[:0])
    assert [x.shape for x in empty] == [(0, 4), (0, 6, 2), (0,)]


@pytest.mark.parametrize("spec", [SHORT_RANGE, FULL_RANGE], ids=["short", "full"])
def test_detectors_find_the_face_with_its_keypoints(spec):
    frame = np.ascontiguousarray(to_uint8(load_image(FACES / "13_east_asian_man_frontal.jpg").pixels))
    det = FaceDetector(spec)(frame)
    assert len(det) == 1 and det.scores[0] > 0.8
    x0, y0, x1, y1 = det.boxes[0]
    right_eye, left_eye, nose, mouth = det.keypoints[0, :4]
    # keypoints inside the box, the subject's right eye on the image left, eyes above nose above mouth
    assert (x0 < det.keypoints[0, :4, 0]).all() and (det.keypoints[0, :4, 0] < x1).all()
    assert right_eye[0] < left_eye[0] and max(right_eye[1], left_eye[1]) < nose[1] < mouth[1] < y1


def test_nothing_on_a_blank_frame():
    assert len(FaceDetector(SHORT_RANGE)(np.full((300, 400, 3), 200, np.uint8))) == 0
