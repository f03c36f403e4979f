"""The scripts in examples/ run: the folder fit writes a result per photo and a summary row per face,
a corrupt photo included."""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_astronaut_example_writes_the_sample_photo(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    out = tmp_path / "astronaut.png"
    subprocess.run([sys.executable, str(EXAMPLES / "astronaut.py"), str(out)], check=True, capture_output=True)
    assert Image.open(out).size == (512, 512)


def test_fit_folder_example(ict_dir, faces_dir, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted(faces_dir.glob("*.jpg"))[:2]
    for p in photos:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not a photo")
    monkeypatch.setenv("FACEFIT_ICT_DIR", str(ict_dir))
    out = tmp_path / "out"
    example = _load("fit_folder")
    assert example.main([str(folder), "--out", str(out), "--stages", "coarse"]) == 1  # one photo failed
    captured = capsys.readouterr()
    assert "2 of 3 fitted" in captured.out and "broken: cannot read image" in captured.err

    with open(out / "summary.csv", newline="") as f:
        rows = {r["photo"]: r for r in csv.DictReader(f)}
    assert set(rows) == {p.stem for p in photos} | {"broken"}
    assert rows["broken"]["ok"] == "False" and rows["broken"]["coarse_iod_pct"] == ""
    for p in photos:
        row = rows[p.stem]
        assert row["ok"] == "True" and row["error"] == "" and row["file"] == p.name
        assert 0 < float(row["coarse_iod_pct"]) < 5 and row["medium_iod_pct"] == "" and row["psnr_db"] == ""
        assert float(row["seconds"]) > 0
        assert (out / p.stem / "coarse.obj").is_file()
    assert not (out / "broken").exists()

    assert example.main([str(tmp_path / "out")]) == 2  # a folder without photos: one line, exit 2
    assert capsys.readouterr().err == f"error: no photos in {tmp_path / 'out'}\n"


# Runs fit_folder.py's main in a fresh interpreter and says on stdout which of
# the slow imports (torch, the face-model runtime ai_edge_litert or mediapipe: seconds, then the model) it made.
LIGHT_PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fit_folder", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
rc = example.main(sys.argv[2:])
print("heavy:", ",".join(sorted(m for m in ("torch", "ai_edge_litert", "mediapipe") if m in sys.modules)))
sys.exit(rc)
"""


@pytest.mark.parametrize("case", ["missing folder", "file as folder", "unknown stage", "skipped stage",
                                  "no photos", "out under a file"])
def test_fit_folder_bad_arguments_one_line_before_anything(tmp_path, faces_dir, case):
    """Raw tracebacks before (the bad stages only after --out was made): one line, exit 2, nothing made or loaded."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted(faces_dir.glob("*.jpg"))[0], photos)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder\n")
    out = tmp_path / "out"
    args, message = {
        "missing folder": ([str(tmp_path / "nowhere")], f"error: {tmp_path / 'nowhere'}: no such folder"),
        "file as folder": ([str(tmp_path / "a_file")], f"error: {tmp_path / 'a_file'}: not a folder"),
        "unknown stage": ([str(photos), "--stages", "coarse,medum"], "error: unknown stage 'medum'"),
        "skipped stage": ([str(photos), "--stages", "medium"], "error: stages must start at coarse"),
        "no photos": ([str(tmp_path / "empty")], f"error: no photos in {tmp_path / 'empty'}"),
        "out under a file": ([str(photos), "--out", str(tmp_path / "a_file" / "out")],
                             f"error: cannot write to {tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is not a"),
    }[case]
    if "--out" not in args:
        args += ["--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent), OMP_NUM_THREADS="1")  # this checkout's packages
    res = subprocess.run([sys.executable, "-c", LIGHT_PROBE, str(EXAMPLES / "fit_folder.py"), *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert res.stdout.strip() == "heavy:", f"loaded before the check: {res.stdout}"
    assert not out.exists()


def test_fit_folder_ctrl_c_is_one_line_and_exit_130(faces_dir, tmp_path, monkeypatch, capsys):
    import fitting.api

    class InterruptedFitter:  # stands in for FaceFitter: Ctrl-C during the first fit
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def iter_fit(self, sources):
            raise KeyboardInterrupt
            yield

    monkeypatch.setattr(fitting.api, "FaceFitter", InterruptedFitter)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sorted(faces_dir.glob("*.jpg"))[0], folder)
    example = _load("fit_folder")
    try:
        rc = example.main([str(folder), "--out", str(tmp_path / "out"), "--stages", "coarse"])
    except KeyboardInterrupt:  # escaping, it would stop the whole pytest session
        pytest.fail("Ctrl-C escaped fit_folder's main as a KeyboardInterrupt traceback")
    assert rc == 130 and capsys.readouterr().err == "interrupted\n"
