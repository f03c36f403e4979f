"""fit-face's worker processes (fitting.workers): how photos are shared out, and the CLI with workers
against the CLI in one process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fitting.workers import default_workers, plan_tasks
from test_cli import TIMEOUT, cli_env, error_lines, run_cli


@pytest.mark.parametrize("n, workers, batch", [(8, 2, 4), (5, 2, 4), (20, 2, 4), (3, 4, 4), (1, 2, 4), (9, 3, 2)])
def test_plan_tasks_keeps_order_and_balances(n, workers, batch):
    photos = [f"p{i}.jpg" for i in range(n)]
    names = [f"n{i}" for i in range(n)]
    tasks = plan_tasks(photos, names, workers, batch)
    assert [p for t in tasks for p in t.photos] == photos and [m for t in tasks for m in t.names] == names
    sizes = [len(t.photos) for t in tasks]
    assert max(sizes) <= batch and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, sizes
    # as many tasks as workers (or a multiple), unless there are fewer photos than that
    assert len(tasks) % workers == 0 or len(tasks) == n, sizes
    assert [t.index for t in tasks] == list(range(len(tasks)))


def test_default_workers():
    assert default_workers(8, "cuda") == 1  # one GPU: the processes would only share it
    assert default_workers(1, "cpu") == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers(100, "cpu") == min(cores, default_workers(100, "cpu"))
    assert 1 <= default_workers(100, "cpu") <= cores
    assert default_workers(2, "cpu") <= 2


def _obj_vertices(path):
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.array(rows, float)


def test_workers_write_what_one_process_writes(tmp_path, model_args, good_photos, bad_inputs):
    photos = [str(good_photos[0]), str(bad_inputs["grey"]), str(good_photos[1])]
    runs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        # One face per batch and one thread in both runs: a photo's fit then does not depend on where it
        # ran. (Batched with another face, its rounding differs and the Adam polish amplifies that:
        # 0.04 mm mean, 0.16 mm at most for one shared photo alone vs in a batch of two.)
        res = run_cli(*photos, "--stages", "coarse", "--out", str(out), "--workers", workers, "--batch-size", "1",
                      *model_args, cwd=tmp_path, OMP_NUM_THREADS="1")
        assert res.returncode == 1, res.stderr  # the grey image has no face
        errors = error_lines(res.stderr)
        assert len(errors) == 1 and "grey" in errors[0] and "no face" in errors[0], res.stderr
        assert res.stdout.split() == [str(out / good_photos[0].stem), str(out / good_photos[1].stem)]
        assert sorted(p.name for p in out.iterdir()) == sorted([good_photos[0].stem, good_photos[1].stem])
        runs[workers] = out
    for photo in good_photos[:2]:
        one = _obj_vertices(runs["1"] / photo.stem / "coarse.obj")
        two = _obj_vertices(runs["2"] / photo.stem / "coarse.obj")
        assert one.shape == two.shape and one.shape[0] > 1000
        assert np.abs(one - two).max() < 1e-6, np.abs(one - two).max()


def test_ctrl_c_stops_every_worker_and_leaves_nothing_half_written(tmp_path, model_args, good_photos):
    """Ctrl-C in a terminal reaches the whole process group: one line, exit 130, no worker left running,
    no folder (hidden or not) in the output."""
    out = tmp_path / "out"
    with_bars = [a for a in model_args if a != "--no-progress"]  # the bar says when a stage starts
    proc = subprocess.Popen([sys.executable, "-m", "fitting.cli", *map(str, good_photos[:2]), "--workers", "2",
                             "--stages", "coarse,medium", "--out", str(out), *with_bars], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,  # its own process group, as a terminal's foreground job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"coarse:" not in b"".join(chunks):
            assert proc.poll() is None, b"".join(chunks).decode(errors="replace")
            assert time.monotonic() < deadline, "the coarse stage never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    stderr = b"".join(chunks).decode(errors="replace")
    assert rc == 130, stderr
    assert "Traceback" not in stderr, stderr
    messages = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and
                not line.startswith("fitting:")]
    assert messages == ["interrupted"], stderr
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    with pytest.raises(ProcessLookupError):  # the workers went with it
        for _ in range(50):
            os.killpg(proc.pid, 0)
            time.sleep(0.1)


def _worker_pids(pid: int) -> list:
    """The CLI's worker processes (spawned interpreters), not multiprocessing's resource tracker."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in open(f"/proc/{pid}/task/{task}/children").read().split():
            cmdline = open(f"/proc/{child}/cmdline", "rb").read()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc to find the workers")
def test_a_killed_worker_fails_only_its_own_photo(tmp_path, model_args, good_photos):
    out = tmp_path / "out"
    with_bars = [a for a in model_args if a != "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "fitting.cli", *map(str, good_photos[:2]), "--workers", "2",
                             "--stages", "coarse,medium", "--out", str(out), *with_bars], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"coarse:" not in b"".join(chunks):
            assert proc.poll() is None, b"".join(chunks).decode(errors="replace")
            assert time.monotonic() < deadline, "the coarse stage never started"
            time.sleep(0.05)
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    stderr = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 1, stderr
    errors = error_lines(stderr.replace("\r", "\n"))
    assert len(errors) == 1 and "worker process ended unexpectedly" in errors[0], stderr
    written = stdout.decode().split()
    assert len(written) == 1 and (out / os.path.basename(written[0]) / "medium.obj").is_file(), stdout
    assert sorted(p.name for p in out.iterdir()) == [os.path.basename(written[0])]
