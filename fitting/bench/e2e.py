"""End-to-end bench: fit-face as a user runs it, a fresh process per run, with the seconds per part.

    python -m fitting.bench e2e [--baseline TREE] [--photos 1 8] [--stages coarse,medium,fine coarse]
                                [--faces DIR] [--model-dir DIR] [--out DIR] [--keep] [--no-warmup]
                                [--workers 1 auto] [--repeat N] [--video FRAMES]

Each run is ``python -m fitting.cli PHOTOS --stages S --out OUT`` in a new
process with the working folder and PYTHONPATH at the tree measured, so it
pays what a user pays: the interpreter, every import, the model and detector
load, the fit and the writing. Per run:

- wall seconds (spawn to exit), CPU seconds of the process (user + system:
  less noisy than wall on a shared machine), peak resident memory (MiB, the
  child's own ``ru_maxrss`` from ``wait4``), photos per minute (photos / wall);
- the parts, where the tree's CLI has ``--timings`` (a tree without it shows
  totals only): start-up (spawn to the end of the CLI's imports: the
  interpreter and the libraries, before any model is read), load (model,
  detector, renderer and what their construction imports), detection
  (reading the photos and MediaPipe), coarse, medium, fine, results (the
  per-face meshes and report pictures), writing (the files), other (the
  rest of the CLI's own time: the pipeline's import, stacking the crops,
  closing the detector), exit (after the CLI returned: the interpreter's
  teardown).

A part includes the imports first made inside it: the CLI imports each
stage's modules when the stage first runs. ``--baseline TREE`` (another
checkout, e.g. an untouched main) runs the same table for that tree first,
so before and after come from one run on one machine. Each tree first gets
an untimed warm-up (imports and one model load, so that both read the model
cache and the libraries from a warm disk cache) unless ``--no-warmup``.
``--video FRAMES`` times a video instead of photos: bench same-person's synthetic clip written as a
1280 x 720 video, fitted with ``--detail none`` and with ``--frame-meshes`` (every frame's medium mesh)
where the tree has it; the frames per second end to end are printed below the table.
The outputs go under ``--out`` (default: a temporary folder) and are
deleted after unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .photos import PHOTO_SUFFIXES, default_faces_dir

THIS_TREE = Path(__file__).resolve().parents[2]
DEFAULT_PHOTO_COUNTS = (1, 8)
DEFAULT_STAGE_SETS = ("coarse,medium,fine", "coarse")
# The parts of a run in the order they happen; "startup", "other" and "exit" are worked out
# here, the rest are read from the CLI's --timings file.
PARTS = ("startup", "load", "detection", "coarse", "medium", "fine", "results", "writing", "other", "exit")
KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux
WARMUP = ("import fitting.api, fitting.pipeline\n"
          "from morphable import load_ict\n"
          "load_ict({model_dir!r}, region='face', progress=False)\n")


@dataclass
class Run:
    """One ``fit-face`` process: its totals and, where the CLI reported them, its parts (seconds)."""

    tree: str
    photos: int
    stages: str
    workers_asked: str  # the CLI's --workers, or "auto"
    returncode: int
    wall_s: float
    cpu_s: float
    peak_mib: float
    parts: Optional[Dict[str, float]] = None  # None: the tree's CLI has no --timings
    workers: Optional[int] = None  # the processes that fitted, from --timings (None: not reported)
    error: str = ""

    @property
    def photos_per_min(self) -> float:
        """Photos fitted per minute of wall time; NaN for a run that failed (its wall time fitted nothing)."""
        return 60.0 * self.photos / self.wall_s if self.returncode == 0 else float("nan")


@dataclass
class Tree:
    label: str
    root: Path
    has_timings: bool = False
    help_s: float = float("nan")
    runs: List[Run] = field(default_factory=list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", metavar="TREE", help="another checkout of the repository to measure first")
    p.add_argument("--photos", type=int, nargs="+", default=list(DEFAULT_PHOTO_COUNTS),
                   help="photos per run, the first N of --faces in name order (default: 1 8)")
    p.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGE_SETS),
                   help="the CLI's --stages for each run (default: coarse,medium,fine coarse)")
    p.add_argument("--faces", default=None, help="folder of photos (default: the shared faces folder)")
    p.add_argument("--model-dir", default=None, help="passed to the CLI (default: its own: $FACEFIT_ICT_DIR, cache)")
    p.add_argument("--out", default=None, help="folder for the fits' outputs (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the outputs (default: deleted after)")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up per tree")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per row, the run of median wall time shown (default 1; 3 on a noisy machine)")
    p.add_argument("--video", type=int, default=0, metavar="FRAMES",
                   help="instead of photos: bench same-person's synthetic clip of FRAMES frames as a 1280 x 720 "
                        "video, fitted with --detail none, and with --frame-meshes too where the tree has it "
                        "(coarse + every frame's medium mesh); frames per second below the table")
    p.add_argument("--workers", nargs="+", default=["auto"],
                   help="the CLI's --workers for each run; auto: its default (one per core, at most one per "
                        "photo), leaving the option out (default: auto; e.g. 1 auto for before and after)")


def tree_env(root: Path) -> Dict[str, str]:
    """The environment for a process that must import ``root``'s packages (not an installed copy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def spawn_and_wait(cmd: Sequence[str], cwd: Path, env: Dict[str, str], stdout: Path, stderr: Path):
    """Run ``cmd``; returns (returncode, wall s, CPU s, peak RSS MiB, spawn time as time.time()).

    ``os.wait4`` gives this child's own resource use (``RUSAGE_CHILDREN`` would be the largest
    of all children so far).
    """
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        spawned_unix, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / KIB_PER_MIB, spawned_unix


def parts_of(report: dict, spawned_unix: float, wall_s: float) -> Dict[str, float]:
    """The table's parts (seconds) from a CLI --timings report (see fitting.cli.write_timings).

    The interpreter's start (spawn to main()) goes to start-up with the CLI's imports; "other" is
    main()'s time outside the named parts; "exit" is the wall time after main() returned.
    """
    interpreter = report["main_entry_unix"] - spawned_unix
    parts = {"startup": interpreter + report["imports"]}
    for name in PARTS[1:-2]:
        parts[name] = float(report.get(name, 0.0))
    if report.get("workers", 1) > 1:  # parts summed over processes that ran side by side: no remainder
        parts["other"] = float("nan")
    else:
        parts["other"] = report["total"] - report["imports"] - sum(parts[name] for name in PARTS[1:-2])
    parts["exit"] = wall_s - interpreter - report["total"]
    return parts


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])


def measure_tree(tree: Tree, photos: List[Path], args, out_root: Path) -> None:
    env = tree_env(tree.root)
    folder = out_root / tree.label
    folder.mkdir(parents=True, exist_ok=True)
    code, tree.help_s, _, _, _ = spawn_and_wait([sys.executable, "-m", "fitting.cli", "--help"], tree.root, env,
                                                folder / "help.out", folder / "help.err")
    if code != 0:
        raise SystemExit(f"e2e bench: {tree.root}: fit-face --help failed: {_tail(folder / 'help.err')}")
    help_text = (folder / "help.out").read_text()
    tree.has_timings = "--timings" in help_text
    # a tree from before --workers fits in one process whatever is asked: measured once
    worker_settings = args.workers if "--workers" in help_text else ["auto"]
    model_args = ["--model-dir", args.model_dir] if args.model_dir else []
    if not args.no_warmup:
        code, *_ = spawn_and_wait([sys.executable, "-c", WARMUP.format(model_dir=args.model_dir)], tree.root, env,
                                  folder / "warmup.out", folder / "warmup.err")
        if code != 0:
            print(f"e2e bench: warm-up of {tree.label} failed ({_tail(folder / 'warmup.err')}); runs go on cold")
    if args.video:
        for label, extra in (("video", []), ("video+frame meshes", ["--frame-meshes"])):
            if all(option in help_text for option in extra):
                tree.runs.append(_one_run(tree, folder, photos, label, "auto", 0, model_args,
                                          ["--detail", "none", *extra], count=args.video))
        return
    for n in args.photos:
        for stages in args.stages:
            for workers in worker_settings:
                repeats = []
                for rep in range(max(1, args.repeat)):
                    repeats.append(_one_run(tree, folder, photos[:n], stages, workers, rep, model_args))
                repeats.sort(key=lambda r: r.wall_s)
                run = repeats[len(repeats) // 2]
                tree.runs.append(run)


def _one_run(tree: Tree, folder: Path, photos: List[Path], stages: str, workers: str, rep: int,
             model_args: List[str], video_args: Optional[List[str]] = None, count: int = 0) -> Run:
    """One fit-face process: ``photos`` with ``--stages stages`` (``--workers``, unless "auto"); or, with
    ``video_args``, the video ``photos[0]`` with those options (``stages`` the row's label, ``count`` its frames)."""
    n = count or len(photos)
    env = tree_env(tree.root)
    run_dir = folder / f"{n}-photos-{stages.replace(',', '-').replace(' ', '')}-workers-{workers}-{rep}"
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = run_dir / "timings.json"
    what = ["--stages", stages] if video_args is None else video_args
    cmd = [sys.executable, "-m", "fitting.cli", *map(str, photos), *what,
           "--out", str(run_dir / "out"), "--no-progress", *model_args]
    if workers != "auto":
        cmd += ["--workers", workers]
    if tree.has_timings:
        cmd += ["--timings", str(timings)]
    print(f"e2e bench: {tree.label}: {n} photo(s), --stages {stages}, --workers {workers} ...", flush=True)
    code, wall, cpu, peak, spawned = spawn_and_wait(cmd, tree.root, env, run_dir / "stdout.txt",
                                                    run_dir / "stderr.txt")
    run = Run(tree.label, n, stages, workers, code, wall, cpu, peak)
    if code != 0:
        run.error = _tail(run_dir / "stderr.txt")
    if timings.is_file():
        report = json.loads(timings.read_text())
        run.parts = parts_of(report, spawned, wall)
        run.workers = int(report.get("workers", 1))
        # wait4 gives the largest process's peak; workers run side by side: their sum
        run.peak_mib = max(run.peak_mib, float(report.get("workers_peak_mib", 0.0)))
    return run


def _commit(root: Path) -> str:
    res = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                         text=True)
    return res.stdout.strip() if res.returncode == 0 else "no git"


def format_table(trees: Sequence[Tree]) -> str:
    head = (f"{'tree':10s} {'photos':>6s} {'stages':18s} {'workers':>7s} {'wall s':>7s} {'cpu s':>7s} {'peak MiB':>8s} "
            f"{'photo/min':>9s} | " + " ".join(f"{p.replace('detection', 'detect'):>7s}" for p in PARTS))
    lines = [head, "-" * len(head)]
    for tree in trees:
        for r in tree.runs:
            parts = " ".join(f"{r.parts[p]:7.2f}" if r.parts and r.parts[p] == r.parts[p] else f"{'n/a':>7s}"
                             for p in PARTS)
            workers = str(r.workers) if r.workers is not None else r.workers_asked
            lines.append(f"{tree.label:10s} {r.photos:6d} {r.stages:18s} {workers:>7s} {r.wall_s:7.1f} {r.cpu_s:7.1f} "
                         f"{r.peak_mib:8.0f} {r.photos_per_min:9.2f} | {parts}")
            if r.returncode != 0:
                lines.append(f"{'':10s} exit {r.returncode}: {r.error}")
    return "\n".join(lines)


def _photos(args) -> List[Path]:
    faces = Path(args.faces) if args.faces else default_faces_dir()
    photos = sorted(p for p in faces.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if faces.is_dir() else []
    if not photos:
        raise SystemExit(f"e2e bench: no photos in {faces}")
    if max(args.photos) > len(photos):
        raise SystemExit(f"e2e bench: {max(args.photos)} photos asked for, {len(photos)} in {faces}")
    return photos


def measure(args) -> List[Tree]:
    """Every run of every tree (the baseline first), outputs deleted unless ``args.keep``."""
    photos = [] if args.video else _photos(args)
    trees = []
    if args.baseline:
        base = Path(args.baseline).resolve()
        if not (base / "fitting" / "cli.py").is_file():
            raise SystemExit(f"e2e bench: --baseline {base} is not a checkout of this repository")
        trees.append(Tree("baseline", base))
    trees.append(Tree("this", THIS_TREE))

    made_out = args.out is None
    out_root = Path(tempfile.mkdtemp(prefix="facefit-e2e-")) if made_out else Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    clip = out_root / "clip.mp4"
    try:
        if args.video:
            from .common import load_models
            from .same_person import write_clip_video
            print(f"e2e bench: writing the {args.video}-frame synthetic clip ...", flush=True)
            write_clip_video(load_models(args.model_dir)[1], clip, args.video)
            photos = [clip]
        for tree in trees:
            measure_tree(tree, photos, args, out_root)
    finally:
        if args.keep:
            print(f"e2e bench: outputs kept under {out_root}")
        else:
            clip.unlink(missing_ok=True)
            for tree in trees:  # only what this bench made: --out may hold other things
                shutil.rmtree(out_root / tree.label, ignore_errors=True)
            if made_out:
                shutil.rmtree(out_root, ignore_errors=True)
    return trees


def run(args) -> int:
    trees = measure(args)
    print()
    print(f"e2e bench: fit-face in a fresh process per run; photos: the first N of "
          f"{args.faces or default_faces_dir()}; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for tree in trees:
        print(f"  {tree.label}: {tree.root} ({_commit(tree.root)}); fit-face --help {tree.help_s:.2f} s; "
              f"parts {'from --timings' if tree.has_timings else 'n/a (no --timings): totals only'}")
    print(format_table(trees))
    if args.video:
        print("Video: 'photos' are the clip's frames (bench same-person's synthetic clip, 1280 x 720, 30 fps); "
              "frames per second end to end: " + "; ".join(
                  f"{t.label} {r.stages} {r.photos / r.wall_s:.2f}" for t in trees for r in t.runs if r.returncode == 0))
    print("Seconds. start-up: spawn to the end of the CLI's imports; load: model, detector, renderer; detection, "
          "coarse, medium, fine, results, writing: summed over the photos; other: the rest of the CLI's time; "
          "exit: after the CLI returned. A part includes the imports first made in it; the parts add up to wall.\n"
          "With several workers (processes side by side, each with its share of the cores), load is the slowest "
          "worker's imports and load, the other parts are summed over the workers (more than wall), and peak MiB "
          "is the sum of the workers' peaks.")
    return 1 if any(r.returncode != 0 for t in trees for r in t.runs) else 0
