"""The scripts in examples/ run: the folder fit writes a result per photo and a summary row per face,
a corrupt photo included."""
from __future__ import annotations

import csv
import importlib.util
import shutil
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

    with pytest.raises(SystemExit):
        example.main([str(tmp_path / "out")])  # a folder without photos: argparse's one-line error
