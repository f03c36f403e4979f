"""Our runner gives mediapipe 0.10.21's Face Mesh points: within 0.5 px mean on every frame the detector feeds it.

The reference (mediapipe_reference.npz, made by make_mediapipe_reference.py
with mediapipe 0.10.21) records, per image, every frame the detector gave
Face Mesh (the shrunk whole image, each crop: where, and whether turned) and
mediapipe's meshes on it. Here those frames are rebuilt and our runner runs
on them, so the comparison needs no mediapipe (Python 3.13); where mediapipe
0.10.21 is installed, the last test checks the reference still is its output.

Whole-pipeline points are compared too, more loosely: the detector's crop
origin is an integer (``FaceMeshDetector._refine``), so a first-pass box a
hundredth of a pixel off can shift the crop by one pixel, which moves
Face Mesh's points by up to ~1 px mean (Grace Hopper: 0.88 px) - mediapipe's
own sensitivity to its input, not a difference between the runners.
"""
from __future__ import annotations

import numpy as np
import pytest

from landmarks.detector import FaceMeshDetector
from landmarks.image import load_image, to_uint8
from make_mediapipe_reference import OUT as REFERENCE_FILE
from make_mediapipe_reference import sources

MEAN_PX = 0.5       # the bar: mean distance per face, pixels of the frame Face Mesh ran on
MAX_PX = 2.0        # and no point far off
PIPELINE_MEAN_PX = 1.5   # whole pipeline, original-image pixels (module docstring: crop-origin flips)

REFERENCE = np.load(REFERENCE_FILE)
SOURCES = sources()
IDS = [n for n, _ in SOURCES]


@pytest.fixture(scope="module")
def ours():
    with FaceMeshDetector() as det:
        yield det


def _frames(det: FaceMeshDetector, name: str, src):
    """``(frame uint8, max_faces, mediapipe's normalised meshes)`` for each Face Mesh call recorded for ``name``."""
    img = load_image(src, name=name)
    assert img.size == tuple(REFERENCE[f"{name}:size"])
    for i, (x0, y0, side, turned) in enumerate(REFERENCE[f"{name}:calls"]):
        if x0 == -1 and side == 0:
            frame, k = det._working_copy(img), det.max_faces
        else:
            frame, k = to_uint8(det._crop_frame(img, int(x0), int(y0), int(side))), 2
            if turned:
                frame = frame[::-1, ::-1]
        yield np.ascontiguousarray(frame), k, REFERENCE[f"{name}:call{i}"]


def test_reference_covers_every_source():
    assert set(IDS) <= set(REFERENCE.files), sorted(set(IDS) - set(REFERENCE.files))
    assert str(REFERENCE["mediapipe_version"]) == "0.10.21"
    calls = np.concatenate([REFERENCE[f"{n}:calls"] for n in IDS])
    assert (calls[:, 3] == 1).sum() >= 1        # the upside-down crop is in it
    assert (calls[:, 2] > 0).sum() >= len(IDS)  # a crop per image at least


@pytest.mark.parametrize("name, src", SOURCES, ids=IDS)
def test_runner_matches_mediapipe_on_the_detectors_frames(ours, name, src):
    for frame, k, expected in _frames(ours, name, src):
        found = ours._models.mesh(frame, k)
        assert len(found) == len(expected)
        h, w = frame.shape[:2]
        scale = np.array([w, h, w], np.float32)     # normalised -> frame pixels (z in widths)
        for ref, pts in zip(expected, found):
            d = np.linalg.norm((pts - ref)[:, :2] * scale[:2], axis=1)
            assert d.mean() < MEAN_PX and d.max() < MAX_PX, (d.mean(), d.max())
            assert (np.abs(pts - ref)[:, 2] * w).mean() < MEAN_PX


@pytest.mark.parametrize("name, src", SOURCES, ids=IDS)
def test_pipeline_points_match_mediapipe(ours, name, src):
    expected = REFERENCE[name]
    found = ours.detect(load_image(src, name=name))
    assert len(found) == len(expected)
    for ref in expected:
        c = ref[:, :2].mean(axis=0)
        pts = min(found, key=lambda f: np.linalg.norm(f.uv.mean(axis=0) - c)).points
        d = np.linalg.norm(pts[:, :2] - ref[:, :2], axis=1)
        assert d.mean() < PIPELINE_MEAN_PX, d.mean()


def test_reference_is_what_mediapipe_gives():
    """Where mediapipe 0.10.21 installs (Python <= 3.12): the stored meshes are its output today."""
    mp = pytest.importorskip("mediapipe", reason="mediapipe==0.10.21 not installed (optional extra)")
    if mp.__version__ != "0.10.21":
        pytest.skip(f"mediapipe {mp.__version__} installed, the reference is 0.10.21's")
    with FaceMeshDetector(backend="mediapipe") as det:
        for name, src in SOURCES[:2] + SOURCES[-3:]:   # photos and each built scene; the rest is the same code
            for frame, k, expected in _frames(det, name, src):
                found = np.array(det._models.mesh(frame, k), np.float32).reshape(-1, 478, 3)
                assert found.shape == expected.shape, name
                if expected.size:
                    assert np.abs(found - expected).max() * max(frame.shape) < 0.05, name
