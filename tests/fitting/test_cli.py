"""``fit-face`` end to end, as a user runs it: ``python -m fitting.cli`` in a subprocess.

The model comes from ``--model-dir`` (the session's unpacked ICT folder) and
the subprocesses share the session's model cache (FACEFIT_CACHE_DIR), which
the ``face_model`` fixture has filled, so no run rebuilds the model. Fits use
``--stages coarse`` to stay fast.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def cli_env(**extra_env: str) -> dict:
    env = dict(os.environ, **extra_env)
    env["FACEFIT_CACHE_DIR"] = os.environ["FACEFIT_CACHE_DIR"]  # the session's private cache (tests/conftest.py)
    env.pop("FACEFIT_ICT_DIR", None)
    env.pop("FACEFIT_ICT_URL", None)
    # this checkout's package first, whatever the venv's editable install points at
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fitting.cli", *args], cwd=cwd, env=cli_env(**extra_env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def error_lines(stderr: str) -> List[str]:
    """The CLI's own messages (a library's warnings, should one print any, are passed over)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


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
    for option in ("--out", "--stages", "--model-dir", "--face-index", "--all-faces", "--initializer", "--version",
                   "--same-person"):
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


# Runs fit-face's main in a fresh interpreter and says on stdout which of the
# slow imports (torch, the face-model runtime ai_edge_litert or mediapipe: 4-8 s with the model) it made.
LIGHT_PROBE = """
import sys
from fitting.cli import main
rc = main(sys.argv[1:])
print("heavy:", ",".join(sorted(m for m in ("torch", "ai_edge_litert", "mediapipe") if m in sys.modules)))
sys.exit(rc)
"""


@pytest.mark.parametrize("case", ["missing photo", "folder as photo", "unknown stage", "skipped stage",
                                  "out under a file", "missing model folder"])
def test_bad_arguments_are_refused_before_anything_loads(tmp_path, good_photos, case):
    """Each: exit 2, one line, before torch, MediaPipe or the model load (they took 4-8 s) and before --out exists."""
    photo = str(good_photos[0])
    out = tmp_path / "out"
    (tmp_path / "a_file").write_text("not a folder\n")
    args, message = {
        "missing photo": (["nope.jpg"], "error: nope.jpg: no such file"),
        "folder as photo": ([str(good_photos[0].parent)], f"error: {good_photos[0].parent}: a folder, not an image"),
        "unknown stage": ([photo, "--stages", "coarse,fnie"], "error: unknown stage 'fnie'; stages are coarse"),
        "skipped stage": ([photo, "--stages", "coarse,fine"],
                          "error: stages must start at coarse and not skip one: got coarse,fine"),
        "out under a file": ([photo, "--out", str(tmp_path / "a_file" / "out")],
                             f"error: cannot write to {tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is not"),
        "missing model folder": ([photo, "--model-dir", str(tmp_path / "nowhere")],
                                 f"error: model path {tmp_path / 'nowhere'} does not exist"),
    }[case]
    started = time.perf_counter()
    if "--out" not in args:
        args += ["--out", str(out)]
    res = subprocess.run([sys.executable, "-c", LIGHT_PROBE, *args, "--no-progress"],
                         cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert res.stdout.strip() == "heavy:", f"loaded before the check: {res.stdout} ({seconds:.1f} s)"
    assert not out.exists()


class StandInFitter:
    """Stands in for FaceFitter: hands over ``results``, then Ctrl-C arrives (as during the next fit)."""

    results = []

    def __init__(self, stages, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def iter_fit(self, sources):
        yield from self.results
        raise KeyboardInterrupt


def small_result(name):
    import numpy as np
    from fitting.api import FitResult
    return FitResult(name=name, params={"units": "mm"}, images={"overlay": np.full((8, 8, 3), 0.5, np.float32)})


def run_main_in_process(args):
    from fitting.cli import main
    try:
        return main(args)
    except KeyboardInterrupt:  # escaping, it would stop the whole pytest session
        pytest.fail("Ctrl-C escaped fit-face's main as a KeyboardInterrupt traceback")


@pytest.mark.parametrize("when", ["while fitting", "while saving"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, good_photos, capsys, when):
    import fitting.api
    import fitting.outputs.folder

    out = tmp_path / "out"
    monkeypatch.setattr(fitting.api, "FaceFitter", StandInFitter)
    monkeypatch.setattr(StandInFitter, "results", [small_result("first")])
    if when == "while saving":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(fitting.outputs.folder, "save_image", interrupted)
    rc = run_main_in_process([str(good_photos[0]), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 130 and captured.err == "interrupted\n", captured.err
    # a result saved before Ctrl-C stays whole; one being saved leaves nothing, not even a hidden folder
    expected = ["first"] if when == "while fitting" else []
    assert sorted(p.name for p in out.iterdir()) == expected
    if expected:
        assert (out / "first" / "params.json").is_file()


class WatchedCli:
    """``fit-face ARGS`` in a subprocess whose stderr (the progress bar, which names each stage as it
    starts) is read as it comes, so a test can act once a stage runs. Use as a context manager: on
    the way out a process still running is killed (its whole group with ``new_session``).

    A test run started as a background job (`cmd &`, nohup) inherits SIGINT ignored, and Python then
    keeps it ignored: the child gets the default disposition back, as a terminal's foreground job has.
    ``new_session``: its own process group, as a terminal's foreground job (Ctrl-C reaches them all).
    """

    def __init__(self, args: List[str], cwd: Path, new_session: bool = False):
        self.new_session = new_session
        self.proc = subprocess.Popen([sys.executable, "-m", "fitting.cli", *args], cwd=cwd, env=cli_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=new_session,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self._chunks: List[bytes] = []
        self._out: List[bytes] = []
        self._readers = [threading.Thread(target=lambda s=stream, c=chunks: c.extend(iter(lambda: s.read1(4096), b"")),
                                          daemon=True)
                         for stream, chunks in ((self.proc.stderr, self._chunks), (self.proc.stdout, self._out))]
        for reader in self._readers:
            reader.start()

    @property
    def stderr(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, marker: str, what: str) -> None:
        """Until ``marker`` is on stderr; fails if the process ends first or TIMEOUT passes."""
        deadline = time.monotonic() + TIMEOUT
        while marker.encode() not in b"".join(self._chunks):
            assert self.proc.poll() is None, self.stderr
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def finish(self, timeout: float) -> tuple:
        """Wait for the exit: (exit code, stdout, stderr)."""
        rc = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return rc, b"".join(self._out).decode(errors="replace"), self.stderr

    def __enter__(self) -> "WatchedCli":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            if self.new_session:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait()


def interrupted_messages(stderr: str) -> List[str]:
    """The CLI's lines besides the progress bar, which redraws itself with carriage returns."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and
            not line.startswith("fitting:")]


def test_sigint_while_fitting(tmp_path, model_args, good_photos):
    """A real Ctrl-C (SIGINT) once the coarse stage runs: one line, exit 130, no folder.

    It printed a traceback of 20-40 lines."""
    out = tmp_path / "out"
    with_bars = [a for a in model_args if a != "--no-progress"]  # the bar says when a stage starts
    with WatchedCli([str(good_photos[0]), "--stages", "coarse,medium", "--out", str(out), *with_bars],
                    tmp_path) as cli:
        cli.wait_for("coarse:", "the coarse stage never started")
        cli.proc.send_signal(signal.SIGINT)
        rc, _, stderr = cli.finish(timeout=60)
    assert rc == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert interrupted_messages(stderr) == ["interrupted"], stderr
    assert not out.exists() or not any(out.iterdir())


def test_damaged_model_archive_is_one_line_and_kept(tmp_path, ict_archive_path, good_photos):
    damaged = tmp_path / "mine" / ict_archive_path.name
    damaged.parent.mkdir()
    damaged.write_bytes(ict_archive_path.read_bytes()[:ict_archive_path.stat().st_size // 2])  # cut short
    out = tmp_path / "out"
    res = run_cli(str(good_photos[0]), "--stages", "coarse", "--out", str(out), "--model-dir", str(damaged),
                  "--no-progress", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read model archive {damaged}: "), res.stderr
    assert damaged.is_file(), "the user's own archive is reported, never deleted"
    assert not out.exists()


def test_unreadable_photo_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    """A photo that exists but cannot be opened (permission denied; the tests run as root here, who may
    open anything, so the refusal is simulated) counts as missing: alone, it is exit 2 before any load."""
    import fitting.api
    import fitting.checks

    photo = tmp_path / "locked.jpg"
    photo.write_bytes(b"\xff\xd8")
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if Path(path) == photo:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def no_fitter(*args, **kwargs):
        raise AssertionError("FaceFitter was created for a photo that cannot be read")

    monkeypatch.setattr(fitting.checks, "open", refusing_open, raising=False)  # shadows the builtin there only
    monkeypatch.setattr(fitting.api, "FaceFitter", no_fitter)
    assert run_main_in_process([str(photo), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: {photo}: cannot open it (Permission denied)\n"
    assert not (tmp_path / "out").exists()
