"""landmarks/data: the shipped MediaPipe model files are intact, and a damaged one stops with one clear line."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from landmarks import model_files
from landmarks.errors import ModelFileError
from landmarks.model_files import DATA_DIR, expected_hashes, read_data_file, read_json

MODELS = ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite",
          "face_landmark_with_attention.tflite")


def test_every_listed_file_has_its_sha256():
    sums = expected_hashes()
    assert set(MODELS) | {"MEDIAPIPE_LICENSE.txt", "facemesh_edges.json", "facemesh_refinement.json"} <= set(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_licence_is_apache_2():
    text = (DATA_DIR / "MEDIAPIPE_LICENSE.txt").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A copy of landmarks/data that the package reads instead (hash list re-read)."""
    copy = tmp_path / "data"
    shutil.copytree(DATA_DIR, copy)
    monkeypatch.setattr(model_files, "DATA_DIR", copy)
    expected_hashes.cache_clear()
    yield copy
    expected_hashes.cache_clear()


@pytest.mark.parametrize("damage", ["truncated", "missing", "one byte changed"])
def test_damaged_model_is_one_line_naming_the_file(data_copy, damage):
    path = data_copy / "face_landmark_with_attention.tflite"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:1000])
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes(data[:500] + bytes([data[500] ^ 1]) + data[501:])
    with pytest.raises(ModelFileError) as err:
        read_data_file(path.name)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "reinstall facefit" in message
    assert ("missing" in message) if damage == "missing" else ("damaged" in message)

    from landmarks.detector import FaceMeshDetector
    with pytest.raises(ModelFileError, match="face_landmark_with_attention.tflite"):
        FaceMeshDetector()


def test_missing_checksum_list(data_copy):
    (data_copy / "SHA256SUMS").unlink()
    with pytest.raises(ModelFileError, match="checksum list .* is missing"):
        read_data_file("face_detection_short_range.tflite")


def test_refinement_table_is_the_models_own_crop_subsets():
    """What each attention sub-output refines = the points the model crops that region around
    (its Landmarks2TransformMatrix options), in order; irises take their eye's eyelid depth."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers
    model = schema.ModelT.InitFromPackedBuf(read_data_file(MODELS[2]), 0)
    codes = model.operatorCodes
    subsets = [flexbuffers.Loads(bytes(op.customOptions))["subset_idxs"] for op in model.subgraphs[0].operators
               if codes[op.opcodeIndex].customCode == b"Landmarks2TransformMatrix"]
    table = read_json("facemesh_refinement.json")
    assert sorted(map(tuple, subsets)) == sorted([tuple(table["lips"]), tuple(table["left_eye"]),
                                                  tuple(table["right_eye"])])
    assert len(table["lips"]) == 80 and len(table["left_eye"]) == len(table["right_eye"]) == 71
    # every refined point is a mesh point, each listed once per region
    for key in ("lips", "left_eye", "right_eye"):
        assert len(set(table[key])) == len(table[key]) and max(table[key]) < 468
    assert table["left_iris"] == list(range(468, 473)) and table["right_iris"] == list(range(473, 478))
    assert table["left_iris_depth_from"] == table["left_eye"][:16]
    from landmarks import indices as I
    assert set(table["left_iris_depth_from"]) == set(I.RIGHT_EYE_LOOP)   # MediaPipe's left = subject's right
    assert set(table["right_iris_depth_from"]) == set(I.LEFT_EYE_LOOP)
    assert np.isin(I.RIGHT_EYE_OUTER_CORNER, table["left_eye"])
