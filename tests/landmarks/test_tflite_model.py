"""The attention face mesh cut at its custom operators, and the cut kept in a cache folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from landmarks.face_mesh import MESH_MODEL_FILE
from landmarks.mediapipe_ops import CUSTOM_OPS
from landmarks.model_files import read_data_file
from landmarks.tflite_model import TFLiteModel


@pytest.fixture(scope="module")
def content():
    return read_data_file(MESH_MODEL_FILE)


@pytest.fixture(scope="module")
def crop():
    rng = np.random.default_rng(0)
    return rng.random((1, 192, 192, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(content, crop):
    return TFLiteModel(content, CUSTOM_OPS).run(crop)


def _cut_folder(cache):
    found = [p for p in cache.iterdir() if p.name.startswith("tflite-cut-")]
    assert len(found) == 1, found
    return found[0]


def test_cut_kept_in_the_cache_gives_the_same_outputs(tmp_path, content, crop, reference):
    first = TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)
    folder = _cut_folder(tmp_path)
    plan = json.loads((folder / "cut.json").read_text())
    codes = {s["code"] for s in plan["steps"] if s["kind"] == "custom"}
    assert codes == {"Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"}
    assert any(s["kind"] == "model" for s in plan["steps"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary folder left
    second = TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)   # read back, not cut again
    for a, b, c in zip(reference, first.run(crop), second.run(crop)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_reading_the_cut_does_not_unpack_the_model(tmp_path, content, monkeypatch):
    TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)
    import landmarks.tflite_model as tm

    def no_cut(_):
        raise AssertionError("the model was cut again")
    monkeypatch.setattr(tm, "_cut", no_cut)
    TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)


def test_damaged_cut_is_made_again(tmp_path, content, crop, reference):
    TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)
    folder = _cut_folder(tmp_path)
    piece = sorted(folder.glob("slice-*.tflite"))[-1]
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF   # one flipped byte in a weight: only the checksum can tell
    piece.write_bytes(bytes(data))
    again = TFLiteModel(content, CUSTOM_OPS, cache_dir=tmp_path)
    for a, b in zip(reference, again.run(crop)):
        np.testing.assert_array_equal(a, b)


def test_unwritable_cache_still_runs(tmp_path, content, crop, reference):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = TFLiteModel(content, CUSTOM_OPS, cache_dir=blocker / "cache")
    for a, b in zip(reference, model.run(crop)):
        np.testing.assert_array_equal(a, b)


def test_missing_custom_operator_is_named(content, tmp_path):
    ops = dict(CUSTOM_OPS)
    ops.pop("TransformLandmarks")
    for cache in (None, tmp_path, tmp_path):   # cut afresh, written, read back
        with pytest.raises(ValueError, match="TransformLandmarks"):
            TFLiteModel(content, ops, cache_dir=cache)
