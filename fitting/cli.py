"""fit-face: fit a 3D face to each photo; write its meshes, maps and pictures to OUT/<photo name>/."""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__

EPILOG = """\
examples:
  fit-face photo.jpg --out out                       all stages (coarse, medium, fine)
  fit-face a.jpg b.png --stages coarse --out out     the 3DMM fit only
  fit-face group.jpg --all-faces --out out           every face in the photo

The ICT Face Model is read from --model-dir, $FACEFIT_ICT_DIR, the cache,
or downloaded once (verified by SHA-256)."""


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fit-face", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", metavar="IMG", help="photos (JPEG, PNG, TIFF, ...)")
    ap.add_argument("--out", default="out", help="output folder; one sub-folder per image (default: out)")
    ap.add_argument("--stages", default="coarse,medium,fine",
                    help="comma-separated stages to run, from coarse on (default: coarse,medium,fine)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: CUDA with nvdiffrast when present, else CPU")
    ap.add_argument("--model-dir", help="ICT-FaceKit folder, its archive, or a folder holding that one archive")
    faces = ap.add_mutually_exclusive_group()
    faces.add_argument("--face-index", type=_int_at_least(0), default=0, help="which face, largest first (default 0)")
    faces.add_argument("--all-faces", action="store_true", help="fit every face found")
    ap.add_argument("--initializer", help="a registered initialiser, e.g. mediapipe_mesh")
    ap.add_argument("--batch-size", type=_int_at_least(1), default=4, help="faces per stage batch (default 4)")
    ap.add_argument("--fine-subdivisions", type=_int_at_least(0), default=None, metavar="N",
                    help="subdivisions of fine.obj before its displacement, each x4 triangles (default 2: "
                         "about 300k triangles, 30 MB; 0: the model's own mesh)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--timings", metavar="FILE",
                    help="write the run's seconds per part (imports, load, detection, each stage, writing) "
                         "to FILE as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--version", action="version", version=f"fit-face {__version__}")
    return ap


def _unwritable(folder: Path):
    """Why ``folder`` could not be created or written (None when it can), without creating it."""
    p = folder.resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


# The parts of a run that --timings reports: seconds summed over every face of every photo.
# "results" is the per-face pictures and meshes made after the stages (fitting.pipeline).
FACE_PARTS = ("detection", "coarse", "medium", "fine", "results")


def write_timings(path: Path, main_entry_unix: float, parts: dict, face_timings: list, faces: int) -> None:
    """``--timings``: JSON of the run's parts in seconds, for ``python -m fitting.bench e2e``.

    ``main_entry_unix`` (time.time() as main() began) lets the caller that spawned this process
    add the interpreter's own start-up; ``parts`` are the CLI's own (imports, load, writing,
    total); the per-face parts are summed over ``face_timings``, each result's ``timings``;
    ``faces``: the results that were fitted.
    """
    report = {"main_entry_unix": main_entry_unix, **{k: round(v, 4) for k, v in parts.items()}}
    for part in FACE_PARTS:
        report[part] = round(sum(t.get(part, 0.0) for t in face_timings), 4)
    report["faces"] = faces
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    main_entry_unix, started = time.time(), time.perf_counter()
    # At exit the interpreter's last garbage collection walks every object torch, MediaPipe and
    # open3d made: 1-2 s on this 2-core machine, after the work is done. Frozen objects are
    # skipped by it (files are closed and outputs written long before). Once per process.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    out = Path(args.out)
    missing = [p for p in args.images if not Path(p).is_file()]
    for p in missing:
        why = "a folder, not an image (pass the files in it, e.g. DIR/*.jpg)" if Path(p).is_dir() else "no such file"
        print(f"error: {p}: {why}", file=sys.stderr)

    problem = _unwritable(out)  # fail now, not after every fit; create nothing yet
    if problem:
        print(f"error: cannot write to {out}: {problem}", file=sys.stderr)
        return 2

    existing = [p for p in args.images if p not in missing]
    if not existing:  # nothing to fit: no model, detector or torch to load
        return 1

    # Imported here, not at the top: --help, --version and argument errors answer without torch,
    # MediaPipe or the model. Each stage's own modules load when the stage first runs.
    from morphable import ModelLoadError
    from .api import FaceFitter
    from .renderer import RendererUnavailable
    fine = None
    if args.fine_subdivisions is not None:
        from .fine import FineStageSettings
        fine = FineStageSettings(displaced_subdivisions=args.fine_subdivisions)
    parts = {"imports": time.perf_counter() - started}
    try:
        fitter = FaceFitter(stages, model_dir=args.model_dir, device=args.device, face_index=args.face_index,
                            all_faces=args.all_faces, initializer=args.initializer, batch_size=args.batch_size,
                            fine=fine, progress=not args.no_progress)
    except (ModelLoadError, RendererUnavailable, ValueError, KeyError, FileNotFoundError) as exc:
        # str() of a KeyError is its repr, quotes and all; its message is the first argument
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    parts["load"] = time.perf_counter() - started - parts["imports"]

    failed = len(missing)
    written = []
    face_timings = []  # each result's timings (not the result: memory stays flat), for --timings
    parts["writing"] = 0.0

    from tqdm.auto import tqdm

    def save(result):
        nonlocal failed
        face_timings.append(dict(result.timings))
        if not result.ok:
            failed += 1
            tqdm.write(f"error: {result.name}: {result.error}", file=sys.stderr)  # above the bar, not inside it
            return
        t = time.perf_counter()
        from .export import ExportError
        try:
            written.append(result.save(out / result.name))
        except ExportError as exc:
            failed += 1
            tqdm.write(f"error: {result.name}: {exc}", file=sys.stderr)
        parts["writing"] += time.perf_counter() - t

    with fitter:
        for result in fitter.iter_fit(existing):  # saved and let go: memory stays flat over any number of photos
            save(result)
    for folder in written:
        print(folder)
    if args.timings:
        parts["total"] = time.perf_counter() - started
        write_timings(Path(args.timings), main_entry_unix, parts, face_timings, faces=len(written))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
