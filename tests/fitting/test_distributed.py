"""fit-face --ray (fitting.distributed): inputs, resume, a killed worker, and the same outputs as the local CLI.

The CLI tests start a local Ray with this machine's CPUs (2 on CI), as a user's first run does."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from fitting.distributed import expand_inputs, is_complete
from test_cli import TIMEOUT, cli_env, error_lines

pytest.importorskip("ray", reason="the --ray tests need the test extra's Ray (pip install -e '.[test]')")


def test_expand_inputs_files_folders_and_manifests(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jpg", "d/a.png", "d/sub/c.JPG", "d/notes.txt", "e.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# photos\ne.jpg\n\nd/a.png\n")
    (tmp_path / "list.csv").write_text("id,path\n1,e.jpg\n2,/abs/f.jpg\n")
    got = expand_inputs([str(tmp_path / "d"), str(tmp_path / "list.txt"), str(tmp_path / "list.csv")])
    assert got == [str(tmp_path / "d/a.png"), str(tmp_path / "d/b.jpg"), str(tmp_path / "d/sub/c.JPG"),
                   str(tmp_path / "e.jpg"), str(tmp_path / "d/a.png"), str(tmp_path / "e.jpg"), "/abs/f.jpg"]
    with pytest.raises(ValueError, match="no such file or folder"):
        expand_inputs([str(tmp_path / "missing")])


def test_is_complete(tmp_path):
    assert not is_complete(tmp_path / "none")
    (tmp_path / "half").mkdir()
    assert not is_complete(tmp_path / "half")
    (tmp_path / "half" / "params.json").write_text("{\"name\": ")
    assert not is_complete(tmp_path / "half")
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "params.json").write_text("{\"name\": \"whole\"}")
    assert is_complete(tmp_path / "whole")


def _summary(out):
    with open(out / "summary.csv", newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _ray_cli(*args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "fitting.cli", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, good_photos):
    folder = tmp_path_factory.mktemp("inputs")
    for photo in good_photos[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(folder / "grey.png")
    return folder


def test_ray_run_summary_resume_and_same_outputs_as_local(tmp_path, model_args, photo_folder, good_photos):
    out = tmp_path / "out"
    args = [str(photo_folder), "--ray", "--stages", "coarse", "--batch-size", "1", "--out", str(out), *model_args]
    res = _ray_cli(*args, cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # the corrupt file and the grey image fail, the run finishes
    errors = error_lines(res.stderr)
    assert len(errors) == 2 and any("corrupt" in e for e in errors) and any("no face" in e for e in errors), errors
    stems = sorted(p.stem for p in good_photos[:2])
    rows = _summary(out)
    assert sorted(rows) == sorted(stems + ["corrupt", "grey"])
    for stem in stems:
        assert rows[stem]["status"] == "fitted" and rows[stem]["worker"] and rows[stem]["attempts"] == "1"
        assert float(rows[stem]["landmark_error_iod_coarse"]) < 0.05 and float(rows[stem]["seconds_coarse"]) > 0
        assert is_complete(out / stem)
    assert rows["corrupt"]["status"] == "failed" and "cannot read image" in rows["corrupt"]["error"]
    assert rows["grey"]["status"] == "failed" and "no face" in rows["grey"]["error"]
    assert sorted(p.name for p in out.iterdir()) == sorted(stems + ["summary.csv"])  # no temporary folders

    # The same outputs as the local CLI (one face per batch, one thread: bit for bit).
    local = tmp_path / "local"
    res_local = _ray_cli(*map(str, good_photos[:2]), "--stages", "coarse", "--batch-size", "1", "--workers", "1",
                         "--out", str(local), *model_args, cwd=tmp_path, OMP_NUM_THREADS="1")
    assert res_local.returncode == 0, res_local.stderr
    for stem in stems:
        a, b = ((folder / stem / "coarse.obj").read_text() for folder in (out, local))
        assert a == b

    # A second run fits nothing new: the finished photos are skipped, the failed ones fail again.
    stamps = {stem: (out / stem / "params.json").stat().st_mtime_ns for stem in stems}
    res2 = _ray_cli(*args, cwd=tmp_path)
    assert res2.returncode == 1, res2.stderr
    assert "2 photo(s) already in" in res2.stderr and res2.stdout.split() == []
    rows2 = _summary(out)
    assert all(rows2[stem]["status"] == "done before" for stem in stems)
    assert {stem: (out / stem / "params.json").stat().st_mtime_ns for stem in stems} == stamps


def _actor_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if b"ray::_FitActor" in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc to find the Ray workers")
def test_a_killed_ray_worker_has_its_photos_redone(tmp_path, model_args, good_photos):
    out = tmp_path / "out"
    photos = [str(p) for p in good_photos[:2]]
    proc = subprocess.Popen([sys.executable, "-m", "fitting.cli", *photos, "--ray", "--stages", "coarse,medium",
                             "--out", str(out), *model_args], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(_actor_pids()) < 2:  # both workers up: each is now loading or fitting its photo
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the Ray workers never started"
            time.sleep(0.2)
        # The newest worker: the first loads the model alone and starts fitting at once, so by now it may
        # have saved its photo and hold nothing (then no photo is redone: measured once in CI, after the
        # medium stage got 4x faster); the second has just started and holds its photo's task.
        time.sleep(1.0)
        victim = max(_actor_pids())
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    rows = _summary(out)
    assert all(r["status"] == "fitted" for r in rows.values()), rows
    assert sorted(int(r["attempts"]) for r in rows.values()) in ([1, 2], [2, 2]), rows
    for p in good_photos[:2]:
        assert (out / p.stem / "medium.obj").is_file()
