"""Scale bench: photos per minute of plain fit-face against fit-face --ray, fresh processes.

    python -m fitting.bench scale [--photos 8] [--stages coarse,medium coarse,medium,fine] [--faces DIR]
                                  [--model-dir DIR] [--modes one workers ray1 ray2]

Each mode is one ``fit-face`` process on the same photos (the first N of ``--faces``, repeated
when the folder holds fewer), from spawn to exit:

- ``one``: plain fit-face in one process (``--workers 1``, torch's default threads);
- ``workers``: plain fit-face with its default local worker processes (one per core);
- ``ray1``, ``ray2``: ``--ray`` on a local Ray started by the command, 1 and 2 workers of one
  torch thread each (Ray's start-up and shut-down included: a user waits for them).

Per run: wall seconds, photos per minute, CPU seconds, and memory per worker (MiB: the process's
peak for ``one``; the largest worker's peak for the others, from ``--timings`` or summary.csv).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List

from .e2e import THIS_TREE, spawn_and_wait, tree_env
from .photos import PHOTO_SUFFIXES, default_faces_dir

MODES = {
    "one": ["--workers", "1"],
    "workers": [],
    "ray1": ["--ray", "--workers", "1", "--threads-per-worker", "1"],
    "ray2": ["--ray", "--workers", "2", "--threads-per-worker", "1"],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", type=int, default=8, help="photos per run (default 8)")
    p.add_argument("--stages", nargs="+", default=["coarse,medium", "coarse,medium,fine"],
                   help="the CLI's --stages per run (default: coarse,medium and coarse,medium,fine)")
    p.add_argument("--faces", default=None, help="folder of photos (default: the shared faces folder)")
    p.add_argument("--model-dir", default=None, help="passed to the CLI (default: its own)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES),
                   help="which ways of running to measure (default: all)")


def _photos(args, folder: Path) -> List[Path]:
    faces = Path(args.faces) if args.faces else default_faces_dir()
    found = sorted(p for p in faces.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not found:
        raise SystemExit(f"scale bench: no photos in {faces}")
    photos = []
    for i in range(args.photos):  # copies with their own names when the folder has fewer
        src = found[i % len(found)]
        dst = folder / f"{i:03d}_{src.name}"
        shutil.copyfile(src, dst)
        photos.append(dst)
    return photos


def _worker_peak(run_dir: Path, mode: str, timings: Path, peak: float) -> float:
    if mode.startswith("ray"):
        summary = run_dir / "out" / "summary.csv"
        if summary.is_file():
            with open(summary, newline="") as f:
                values = [float(r["worker_peak_mib"]) for r in csv.DictReader(f) if r.get("worker_peak_mib")]
            return max(values, default=float("nan"))
        return float("nan")
    if mode == "workers" and timings.is_file():
        import json
        report = json.loads(timings.read_text())
        workers = int(report.get("workers", 1))
        if workers > 1:
            return float(report.get("workers_peak_mib", float("nan"))) / workers
    return peak


def run(args) -> int:
    root = Path(tempfile.mkdtemp(prefix="facefit-scale-"))
    env = tree_env(THIS_TREE)
    model_args = ["--model-dir", args.model_dir] if args.model_dir else []
    rows = []
    try:
        photos = _photos(args, root)
        for stages in args.stages:
            for mode in args.modes:
                run_dir = root / f"{mode}-{stages.replace(',', '-')}"
                run_dir.mkdir()
                timings = run_dir / "timings.json"
                cmd = [sys.executable, "-m", "fitting.cli", *map(str, photos), "--stages", stages,
                       "--out", str(run_dir / "out"), "--no-progress", *MODES[mode], *model_args]
                if not mode.startswith("ray"):
                    cmd += ["--timings", str(timings)]
                print(f"scale bench: {mode}, {len(photos)} photos, --stages {stages} ...", flush=True)
                code, wall, cpu, peak, _ = spawn_and_wait(cmd, THIS_TREE, env, run_dir / "stdout.txt",
                                                          run_dir / "stderr.txt")
                fitted = len((run_dir / "stdout.txt").read_text().split())
                rows.append((mode, stages, code, fitted, wall, cpu, _worker_peak(run_dir, mode, timings, peak)))
                if code != 0:
                    tail = (run_dir / "stderr.txt").read_text(errors="replace").strip().splitlines()[-2:]
                    print(f"scale bench: {mode} exited {code}: {' | '.join(tail)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"scale bench: {args.photos} photos per run, fresh processes; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    head = f"{'mode':8s} {'stages':18s} {'fitted':>6s} {'wall s':>7s} {'photo/min':>9s} {'vs one':>6s} " \
           f"{'cpu s':>7s} {'MiB/worker':>10s}"
    print(head)
    print("-" * len(head))
    base = {s: 60.0 * f / w for m, s, c, f, w, _, _ in rows if m == "one" and c == 0 and w > 0}
    for mode, stages, code, fitted, wall, cpu, peak in rows:
        rate = 60.0 * fitted / wall if code == 0 else float("nan")
        ratio = rate / base[stages] if stages in base else float("nan")
        print(f"{mode:8s} {stages:18s} {fitted:6d} {wall:7.1f} {rate:9.2f} {ratio:6.2f} {cpu:7.1f} {peak:10.0f}")
    print("one: fit-face in one process; workers: its default local worker processes; ray1/ray2: --ray on a "
          "local Ray with 1/2 workers of one thread, Ray's start and stop included.")
    return 1 if any(r[2] != 0 for r in rows) else 0
