"""Regenerate landmarks/data/ from an installed mediapipe==0.10.21 (run once; the output is committed).

    python -m pip install mediapipe==0.10.21 ai-edge-litert   # Python <= 3.12
    python tools/make_facemesh_data.py

What it writes into ``landmarks/data/``:

* the three TFLite models, byte for byte as the 0.10.21 wheel ships them
  (``mediapipe/modules/face_detection/*.tflite``, ``face_landmark/*.tflite``);
* ``MEDIAPIPE_LICENSE.txt``: the wheel's licence file (Apache-2.0, with its
  third-party notices);
* ``facemesh_edges.json``: every ``FACEMESH_*`` edge set of
  ``mediapipe.python.solutions.face_mesh_connections`` as sorted ``[a, b]``
  pairs (direction kept: the brow chains are walked along it);
* ``facemesh_refinement.json``: which of the 478 points each of the attention
  model's sub-outputs (lips, eyes, irises) replaces, and which points' mean
  depth each iris gets. The lip and eye tables are read from the model's own
  ``Landmarks2TransformMatrix`` options (the points it crops each region
  around are the points that region's output refines, in the same order, as
  MediaPipe's tensors_to_face_landmarks_with_attention graph lists them);
  the iris depth sets are the eyelid loops (``FACEMESH_LEFT_EYE`` /
  ``FACEMESH_RIGHT_EYE`` point sets), the first 16 points of each eye table;
* ``SHA256SUMS``: the SHA-256 of every file above (checked at load time and
  by tests/landmarks/test_facemesh_data.py).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "landmarks" / "data"
MODELS = {
    "face_detection_short_range.tflite": "modules/face_detection/face_detection_short_range.tflite",
    "face_detection_full_range_sparse.tflite": "modules/face_detection/face_detection_full_range_sparse.tflite",
    "face_landmark_with_attention.tflite": "modules/face_landmark/face_landmark_with_attention.tflite",
}


def _custom_options(model_path: Path) -> list[dict]:
    """The parsed flexbuffer options of every ``Landmarks2TransformMatrix`` op, in operator order."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers
    model = schema.ModelT.InitFromPackedBuf(model_path.read_bytes(), 0)
    codes = model.operatorCodes
    return [flexbuffers.Loads(bytes(op.customOptions)) for op in model.subgraphs[0].operators
            if codes[op.opcodeIndex].customCode == b"Landmarks2TransformMatrix"]


def main() -> int:
    import mediapipe
    from mediapipe.python.solutions import face_mesh_connections as fmc
    if mediapipe.__version__ != "0.10.21":
        print(f"error: needs mediapipe 0.10.21 (the last wheel with the face models), found {mediapipe.__version__}",
              file=sys.stderr)
        return 1
    root = Path(mediapipe.__file__).parent
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rel in MODELS.items():
        shutil.copyfile(root / rel, OUT / name)
    dist = importlib.metadata.distribution("mediapipe")
    lic = next(f for f in dist.files if f.name == "LICENSE")
    shutil.copyfile(dist.locate_file(lic), OUT / "MEDIAPIPE_LICENSE.txt")

    edges = {name: sorted([int(a), int(b)] for a, b in getattr(fmc, name))
             for name in sorted(dir(fmc)) if name.startswith("FACEMESH_")}
    (OUT / "facemesh_edges.json").write_text(json.dumps(
        {"source": "mediapipe 0.10.21, mediapipe/python/solutions/face_mesh_connections.py (Apache-2.0)",
         "edges": edges}, separators=(",", ":")) + "\n")

    # The crops: lips (rotation from mouth corner 61 to 291), the eye with corners 33/133 (the
    # subject's right eye, image left) and the one with 362/263 (subject's left).
    opts = {(o["left_rotation_idx"], o["right_rotation_idx"]): [int(i) for i in o["subset_idxs"]]
            for o in _custom_options(OUT / "face_landmark_with_attention.tflite")}
    lips, right_eye, left_eye = opts[(61, 291)], opts[(33, 133)], opts[(362, 263)]
    eyelid = lambda e: sorted({i for pair in edges[e] for i in pair})
    assert sorted(right_eye[:16]) == eyelid("FACEMESH_RIGHT_EYE"), "eye table does not start with the eyelid loop"
    assert sorted(left_eye[:16]) == eyelid("FACEMESH_LEFT_EYE"), "eye table does not start with the eyelid loop"
    # Model output order: mesh, lips, left eye, right eye, left iris, right iris, face flag.
    # MediaPipe's "left" is the image left = the subject's right (points 33..133, irises 468..472).
    refinement = {
        "source": "mediapipe 0.10.21 face_landmark_with_attention.tflite (Landmarks2TransformMatrix options) and "
                  "mediapipe/modules/face_landmark/tensors_to_face_landmarks_with_attention.pbtxt (Apache-2.0)",
        "lips": lips,
        "left_eye": right_eye,
        "right_eye": left_eye,
        "left_iris": [468, 469, 470, 471, 472],
        "right_iris": [473, 474, 475, 476, 477],
        "left_iris_depth_from": right_eye[:16],
        "right_iris_depth_from": left_eye[:16],
    }
    # one key a line, each list on its line: readable in a diff
    (OUT / "facemesh_refinement.json").write_text(
        "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in refinement.items()) + "\n}\n")

    sums = [f"{hashlib.sha256((OUT / n).read_bytes()).hexdigest()}  {n}\n"
            for n in sorted(list(MODELS) + ["MEDIAPIPE_LICENSE.txt", "facemesh_edges.json",
                                            "facemesh_refinement.json"])]
    (OUT / "SHA256SUMS").write_text("".join(sums))
    print(f"wrote {len(sums)} files to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
