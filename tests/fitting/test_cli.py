"""``fit-face`` end to end, as a user runs it: ``python -m fitting.cli`` in a subprocess.

The model comes from ``--model-dir`` (the session's unpacked ICT folder) and
the subprocesses share the session's model cache (FACEFIT_CACHE_DIR), which
the ``face_model`` fixture has filled, so no run rebuilds the model. Fits use
``--stages coarse`` to stay fast.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def run_cli(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **extra_env)
    env["FACEFIT_CACHE_DIR"] = os.environ["FACEFIT_CACHE_DIR"]  # the session's private cache (tests/conftest.py)
    env.pop("FACEFIT_ICT_DIR", None)
    env.pop("FACEFIT_ICT_URL", None)
    # this checkout's package first, whatever the venv's editable install points at
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "fitting.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def error_lines(stderr: str) -> List[str]:
    """The CLI's own messages (a library's warnings, should one print any, are passed over)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def model_args(ict_dir, face_model) -> List[str]:
    # face_model: the session fixture that builds the cache entry the subprocesses read
    return ["--model-dir", str(ict_dir), "--no-progress"]


def test_version(tmp_path):
    import fitting
    res = run_cli("--version", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"fit-face {fitting.__version__}"


def test_help(tmp_path):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("usage: fit-face")
    for option in ("--out", "--stages", "--model-dir", "--face-index", "--all-faces", "--initializer", "--version"):
        assert option in out
    assert "examples:" in out


def test_missing_file_is_one_error_line(tmp_path, model_args):
    res = run_cli("no_such_photo.jpg", "--stages", "coarse", "--out", str(tmp_path / "out"), *model_args,
                  cwd=tmp_path)
    assert res.returncode != 0
    assert error_lines(res.stderr) == ["error: no_such_photo.jpg: no such file"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_good_and_corrupt_image(tmp_path, model_args, good_photos, bad_inputs):
    good = good_photos[0]
    out = tmp_path / "out"
    res = run_cli(str(good), str(bad_inputs["corrupt"]), "--stages", "coarse", "--out", str(out), *model_args,
                  cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "corrupt.jpg" in errors[0] and "cannot read image" in errors[0], res.stderr
    folder = out / good.stem
    assert res.stdout.split() == [str(folder)]  # the CLI prints each written folder
    assert sorted(p.name for p in out.iterdir()) == [good.stem]  # nothing for the corrupt file, no temp folders
    for name in ("coarse.obj", "coarse.ply", "params.json", "overlay.png"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert not (folder / "medium.obj").exists()
    params = json.loads((folder / "params.json").read_text())
    assert params["name"] == good.stem and params["units"] == "mm" and params["source"] == str(good)
    assert 0 < params["landmark_error_iod"]["coarse"] < 0.05
    assert (folder / "coarse.obj").read_text().count("\nf ") > 10000


def test_photos_of_the_same_name_get_their_own_folders(tmp_path, model_args, good_photos):
    # a/face.jpg and b/face.jpg both wrote to out/face: the second silently replaced the first
    copies = []
    for sub, photo in (("a", good_photos[0]), ("b", good_photos[1])):
        (tmp_path / sub).mkdir()
        copies.append(tmp_path / sub / "face.jpg")
        copies[-1].write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    res = run_cli(*map(str, copies), "--stages", "coarse", "--out", str(out), *model_args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "face"), str(out / "face-2")]
    for folder, copy in zip(("face", "face-2"), copies):
        params = json.loads((out / folder / "params.json").read_text())
        assert params["name"] == folder and params["source"] == str(copy)


def test_unwritable_out(tmp_path, model_args, good_photos):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--out", str(blocker / "out"), *model_args,
                  cwd=tmp_path)
    assert res.returncode != 0
    errors = error_lines(res.stderr)
    # Checked before any fitting: the one line names the output folder and why.
    assert len(errors) == 1 and "cannot write" in errors[0] and "a_file" in errors[0], res.stderr
    assert res.stdout.strip() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing half-written beside it
    assert blocker.read_text() == "not a folder\n"


def test_corrupt_model_dir(tmp_path, ict_dir, face_model, good_photos):
    """A model folder with one damaged file: exit 2, one line, before any fitting."""
    bad = tmp_path / "ict_damaged"
    (bad / "FaceXModel").mkdir(parents=True)
    for p in (ict_dir / "FaceXModel").iterdir():
        (bad / "FaceXModel" / p.name).symlink_to(p)
    target = bad / "FaceXModel" / "generic_neutral_mesh.obj"
    assert target.is_symlink()
    target.unlink()
    target.write_text("v 0 0 0\nthis is not the ICT mesh\n")
    out = tmp_path / "out"
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--out", str(out), "--model-dir", str(bad),
                  "--no-progress", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "generic_neutral_mesh.obj" in lines[0]
    assert not out.exists()


def test_cuda_without_a_gpu_is_one_error_line(tmp_path, model_args, good_photos):
    """--device cuda where torch sees no GPU (hidden here, so this runs on GPU machines too): exit 2, one line."""
    out = tmp_path / "out"
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--out", str(out), "--device", "cuda",
                  *model_args, cwd=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: device 'cuda'"), res.stderr
    assert not out.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size: must be at least 1, got 0"),
    ("--face-index", "-1", "--face-index: must be at least 0, got -1"),
    ("--batch-size", "two", "--batch-size: not a whole number: 'two'"),
])
def test_bad_numbers_are_refused_before_fitting(tmp_path, good_photos, option, value, message):
    """--batch-size 0 once looped forever on an empty chunk; bad numbers are argparse errors (exit 2)."""
    out = tmp_path / "out"
    res = run_cli(str(good_photos[0]), option, value, "--out", str(out), "--no-progress", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr.splitlines()[-1], res.stderr
    assert not out.exists()


def test_unknown_initializer_is_one_plain_line(tmp_path, model_args, good_photos):
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--initializer", "nope", "--out", str(tmp_path / "o"),
                  *model_args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert error_lines(res.stderr) == ["error: unknown initializer 'nope'; available: 3ddfa_v2, auto, "
                                       "mediapipe_mesh"], res.stderr


def test_missing_regressor_folder_is_one_plain_line(tmp_path, model_args, good_photos):
    out = tmp_path / "o"
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--initializer", "3ddfa_v2", "--3ddfa-dir",
                  str(tmp_path / "nowhere"), "--out", str(out), *model_args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert error_lines(res.stderr) == [f"error: 3DDFA folder {tmp_path / 'nowhere'} does not exist"], res.stderr
    assert not out.exists()


def test_fine_subdivisions_reach_the_fine_stage(tmp_path, monkeypatch, good_photos, capsys):
    import fitting.api
    from fitting.cli import main

    made = []

    class RecordingFitter:  # stands in for FaceFitter: records its settings, fits nothing
        def __init__(self, stages, **kwargs):
            made.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def iter_fit(self, sources):
            return iter(())

    monkeypatch.setattr(fitting.api, "FaceFitter", RecordingFitter)
    args = [str(good_photos[0]), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args + ["--fine-subdivisions", "0"]) == 0
    assert main(args) == 0
    assert made[0]["fine"].displaced_subdivisions == 0 and made[1]["fine"] is None  # None: the stage's default
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--fine-subdivisions", "-1"])
    assert exit_info.value.code == 2 and "--fine-subdivisions" in capsys.readouterr().err
