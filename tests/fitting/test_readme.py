"""The README's Python example runs as printed (only the photo and output paths swapped).

A user's first contact with the API is that snippet; it once imported a name
the package did not export.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _readme_python_blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(ict_dir, good_photos, tmp_path, monkeypatch):
    blocks = _readme_python_blocks()
    assert len(blocks) == 1, "the README should carry exactly one Python example"
    code = blocks[0]
    assert '"photo.jpg"' in code and '"out/photo"' in code  # the paths this test swaps
    code = code.replace('"photo.jpg"', repr(str(good_photos[0]))).replace('"out/photo"', repr(str(tmp_path / "photo")))
    monkeypatch.setenv("FACEFIT_ICT_DIR", str(ict_dir))  # no download in tests
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.ok, result.error
    assert {"coarse", "medium", "fine"} <= set(result.meshes)
    assert np.isfinite(result.mesh.vertices).all()
    written = {p.name for p in (tmp_path / "photo").iterdir()}
    assert {"coarse.obj", "medium.obj", "fine.obj", "params.json", "report.png"} <= written


def test_package_exports_the_api_lazily():
    import subprocess
    import sys

    # Importing the package (e.g. for fitting.camera) must not load the API's heavy dependencies.
    probe = ("import sys, fitting; print('ai_edge_litert' in sys.modules, 'mediapipe' in sys.modules, "
             "'fitting.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]
    import fitting
    from fitting.api import FaceFitter, FitError, FitResult

    assert fitting.FaceFitter is FaceFitter and fitting.FitResult is FitResult and fitting.FitError is FitError
    assert "FaceFitter" in dir(fitting)
