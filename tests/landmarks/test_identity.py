"""landmarks.identity: dlib's face descriptors on faces given by MediaPipe's points tell people apart."""
from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from landmarks import FaceMeshDetector, ModelFileError, load_image
from landmarks import indices as I
from landmarks.identity import (SAME_PERSON_DISTANCE, FaceDescriber, face_box, face_descriptor_available,
                                median_distances)

from shared_photos import PHOTOS

FRONTAL = [p for p in PHOTOS if "yaw45" not in p.name]


def test_face_box_is_the_square_between_eyes_and_mouth():
    uv = np.zeros((I.NUM_LANDMARKS, 2))
    uv[[I.RIGHT_EYE_OUTER_CORNER, I.RIGHT_EYE_INNER_CORNER]] = [[80, 100], [120, 100]]
    uv[[I.LEFT_EYE_INNER_CORNER, I.LEFT_EYE_OUTER_CORNER]] = [[180, 100], [220, 100]]
    uv[[I.UPPER_LIP_INNER, I.LOWER_LIP_INNER]] = [[150, 195], [150, 205]]  # 100 px below the eyes
    left, top, right, bottom = face_box(uv)
    assert (left, top, right, bottom) == (45, 45, 255, 255)  # centre (150, 150), 2.1 x 100 px wide


def test_median_distance_outvotes_one_intruder():
    views = np.array([[0.0, 0.0], [0.3, 0.0], [0.1, 0.1], [1.5, 0.0]])  # three views of one person, one other
    d = median_distances(views)
    assert (d[:3] < SAME_PERSON_DISTANCE).all() and d[3] > SAME_PERSON_DISTANCE
    d = median_distances(views[[0, 1, 3]])  # two views and the intruder: each view's twin is nearer
    assert (d[:2] < SAME_PERSON_DISTANCE).all() and d[2] > SAME_PERSON_DISTANCE
    np.testing.assert_allclose(median_distances(views[[0, 3]]), [1.5, 1.5])  # two: both get the one distance
    assert np.isnan(median_distances(views[:1])).all()


def test_without_dlib_is_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    assert not face_descriptor_available()
    with pytest.raises(ModelFileError, match=r'pip install "\.\[identity\]"'):
        FaceDescriber()


@pytest.fixture(scope="module")
def descriptors():
    """Each frontal shared photo's and its mirror image's descriptor: {(name, mirrored): (128,)}."""
    describe = FaceDescriber()
    out = {}
    with FaceMeshDetector() as det:
        for path in FRONTAL:
            pixels = load_image(path).pixels
            for mirrored, img in ((False, pixels), (True, np.ascontiguousarray(pixels[:, ::-1]))):
                face = det.detect_one(img)
                out[path.stem, mirrored] = describe(img, face.uv)
    return out


def test_a_photo_and_its_mirror_image_are_one_person(descriptors):
    """Mirrored, every pixel moves (a stand-in for a second photo of the same person); measured 0.14-0.4."""
    assert len(descriptors) == 2 * len(FRONTAL) >= 10
    for path in FRONTAL:
        a, b = descriptors[path.stem, False], descriptors[path.stem, True]
        assert a.shape == (128,) and np.isfinite(a).all()
        assert np.linalg.norm(a - b) < 0.45, path.stem


def test_two_people_are_farther_apart_than_the_threshold(descriptors):
    """Every pair of different people among the shared photos (measured 0.66-1.0, median 0.85)."""
    gaps = [np.linalg.norm(descriptors[a] - descriptors[b])
            for a, b in itertools.combinations(descriptors, 2) if a[0] != b[0]]
    assert len(gaps) >= 40
    assert min(gaps) > SAME_PERSON_DISTANCE and np.median(gaps) > 0.75
