"""fit-face: fit a 3D face to each photo; write its meshes, maps and pictures to OUT/<photo name>/."""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .checks import folder_problem, photo_problem
from .stages import check_stages

EPILOG = """\
examples:
  fit-face photo.jpg --out out                       all stages (coarse, medium, fine)
  fit-face a.jpg b.png --stages coarse --out out     the 3DMM fit only
  fit-face group.jpg --all-faces --out out           every face in the photo
  fit-face --same-person a.jpg b.jpg c.jpg --out me  one identity from photos of one person
  fit-face clip.mp4 --every 5 --out me               the same from a video's frames

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
    ap.add_argument("--same-person", action="store_true",
                    help="the photos show ONE person: fit one identity to all of them (each photo keeps its "
                         "own pose and expression) and write OUT/identity.obj (textured from all photos: "
                         "identity.png), identity.ply, identity_params.json and expressions.csv (a row per "
                         "photo: head pose and the 53 expression weights under ARKit's names), and the fine "
                         "stage's detail on --detail's photos in OUT/detail/NAME/; landmark fit (--stages, "
                         "--workers do not apply); a photo without a face is reported and left out. A video "
                         "among the inputs (.mp4, .mov, .avi, .mkv, ...) means --same-person, its frames the photos")
    ap.add_argument("--detail", nargs="+", default=["frontal"], metavar="NAME",
                    help="--same-person: the photos (names as in expressions.csv's views: the file's stem, a "
                         "video frame's NAME#fNNNNNN) that get the medium and fine stages' detail in "
                         "OUT/detail/NAME/; 'frontal' (default): the most frontal one; 'none': no detail")
    ap.add_argument("--frame-meshes", action="store_true",
                    help="--same-person and videos: also every photo's or frame's medium mesh (the joint fit "
                         "deformed toward that view's landmarks) as OUT/frames/NAME.ply (model frame, mm; the "
                         "pose in expressions.csv), shown in the overlays; about 0.03 s each after 1.4 s once")
    ap.add_argument("--every", type=_int_at_least(1), default=1, metavar="N",
                    help="videos: fit every N-th frame (default 1: all)")
    ap.add_argument("--max-frames", type=_int_at_least(1), default=300, metavar="N",
                    help="videos: at most N frames from each (default 300; each frame fitted keeps a 3 MB crop)")
    ap.add_argument("--initializer", default="auto",
                    help="the coarse stage's start: auto (default: 3ddfa_v2 when its files are on this machine, "
                         "else none), 3ddfa_v2 (downloads its files on first use; non-commercial), "
                         "mediapipe_mesh, none, or another registered one")
    ap.add_argument("--3ddfa-dir", dest="regressor_dir", metavar="PATH",
                    help="folder of the 3DDFA_V2 regressor's files (else $FACEFIT_3DDFA_DIR, the cache, a download)")
    ap.add_argument("--batch-size", type=_int_at_least(1), default=4, help="faces per stage batch (default 4)")
    ap.add_argument("--workers", type=_int_at_least(1), default=None, metavar="N",
                    help="processes fitting photos side by side, each with its share of the CPU cores (default: "
                         "one per core, at most one per photo; 1 where a GPU may be used)")
    ap.add_argument("--fine-subdivisions", type=_int_at_least(0), default=None, metavar="N",
                    help="subdivisions of fine.obj before its displacement, each x4 triangles (default 2: "
                         "about 300k triangles, 30 MB; 0: the model's own mesh)")
    ray = ap.add_argument_group("on a Ray cluster (pip install -e \".[ray]\")")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="fit on Ray: a cluster's ADDRESS, or without one a local Ray on this machine; IMG may "
                          "then also be folders and manifests (.txt, .csv, .parquet lists of paths); photos "
                          "already in --out are skipped; OUT/summary.csv lists every photo")
    ray.add_argument("--threads-per-worker", type=_int_at_least(1), default=1, metavar="N",
                     help="with --ray: torch threads (CPUs) per worker (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                     help="with --ray: GPUs per worker (default 0: CPU workers; 1: one worker per GPU, CUDA)")
    ray.add_argument("--retries", type=_int_at_least(0), default=2, metavar="N",
                     help="with --ray: how often a task whose worker died is tried again (default 2)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--timings", metavar="FILE",
                    help="write the run's seconds per part (imports, load, detection, each stage, writing) "
                         "to FILE as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--version", action="version", version=f"fit-face {__version__}")
    return ap


# The shell's exit status for a program ended by Ctrl-C (SIGINT, signal 2): 128 + 2.
EXIT_INTERRUPTED = 130


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
    # At exit the interpreter's last garbage collection walks every object torch, MediaPipe and
    # open3d made: 1-2 s on this 2-core machine, after the work is done. Frozen objects are
    # skipped by it (files are closed and outputs written long before). Once per process.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # A fit in progress is dropped, a save in progress removes its temporary
        # folder (outputs.save_result), the folders already written stay.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(argv) -> int:
    main_entry_unix, started = time.time(), time.perf_counter()
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    out = Path(args.out)

    # Every argument is checked before torch, MediaPipe and the model load (4-8 s)
    # and before anything is created: a typo is reported in 0.2 s, all of them at once.
    usage_errors = []
    stages = None
    try:
        stages = check_stages(args.stages)
    except ValueError as exc:
        usage_errors.append(str(exc))
    missing, ray_photos = [], []
    from .video import is_video
    args.same_person = args.same_person or any(is_video(p) for p in args.images)
    if args.same_person and args.ray is not None:
        usage_errors.append("--same-person fits on this machine: it does not go with --ray")
    if args.same_person and args.all_faces:
        usage_errors.append("--same-person fits one face per photo: it does not go with --all-faces")
    if args.frame_meshes and not args.same_person:
        usage_errors.append("--frame-meshes is for --same-person and videos (a single photo's medium mesh is "
                            "medium.obj: --stages coarse,medium)")
    if args.ray is not None:  # files, folders and manifests, expanded
        from .distributed import expand_inputs
        try:
            ray_photos = expand_inputs(args.images)
        except ValueError as exc:
            usage_errors.append(str(exc))
        if not ray_photos and not usage_errors:
            usage_errors.append("no photos in the inputs given")
    else:
        for p in args.images:
            why = photo_problem(p)
            if why:
                missing.append(p)
                print(f"error: {p}: {why}", file=sys.stderr)
    problem = folder_problem(out)
    if problem:
        usage_errors.append(f"cannot write to {out}: {problem}")
    if args.model_dir and not Path(args.model_dir).expanduser().exists():
        usage_errors.append(f"model path {args.model_dir} does not exist")
    for message in usage_errors:
        print(f"error: {message}", file=sys.stderr)
    if usage_errors or len(missing) == len(args.images):  # nothing that could be fitted
        return 2
    if args.ray is not None:
        return _run_on_ray(args, stages, ray_photos, out)

    existing = [p for p in args.images if p not in missing]
    if args.same_person:
        return _run_same_person(args, existing, len(missing), out)
    from .workers import cpu_cores, default_workers
    workers = min(args.workers or default_workers(len(existing), args.device), len(existing))
    if workers > 1:
        return _run_in_workers(args, stages, existing, workers, max(1, cpu_cores() // workers), out,
                               len(missing), main_entry_unix, started)

    # Imported here, not at the top: --help, --version and argument errors answer without torch,
    # MediaPipe or the model. Each stage's own modules load when the stage first runs.
    import importlib
    importlib.import_module(".api", __package__)  # torch, the detector's and the stages' modules: timed as "imports"
    fine = None
    if args.fine_subdivisions is not None:
        from .stages.fine import FineSettings
        fine = FineSettings(displaced_subdivisions=args.fine_subdivisions)
    parts = {"imports": time.perf_counter() - started}
    fitter = _open_fitter(stages, model_dir=args.model_dir, device=args.device, face_index=args.face_index,
                          all_faces=args.all_faces, initializer=args.initializer, regressor_dir=args.regressor_dir,
                          batch_size=args.batch_size, fine=fine, progress=not args.no_progress)
    if fitter is None:
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
        from .outputs.files import ExportError
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


def _open_fitter(stages, **kwargs):
    """``FaceFitter(stages, **kwargs)``, or None after printing why it could not load (a missing or
    damaged model, no face detector or renderer, a bad setting) as one ``error:`` line."""
    from landmarks import LandmarksError
    from morphable import ModelLoadError
    from .api import FaceFitter
    from .rendering.renderer import RendererUnavailable
    try:
        return FaceFitter(stages, **kwargs)
    except (ModelLoadError, LandmarksError, RendererUnavailable, ValueError, KeyError, FileNotFoundError) as exc:
        # str() of a KeyError is its repr, quotes and all; its message is the first argument
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return None


def _run_same_person(args, photos, failed: int, out: Path) -> int:
    """``--same-person``: one joint fit of ``photos`` and videos' frames (fitting.same_person); writes
    into ``out`` itself.

    Photos (frames) that cannot be read or show no face and videos that do not decode are reported
    and left out; the exit status is 1 when any was (as for a failed photo without --same-person),
    the files are written all the same."""
    from .outputs.files import ExportError
    from .naming import name_of, unique_names
    from .result import FitError
    from .video import VideoError, frame_views, is_video
    fitter = _open_fitter(("coarse",), model_dir=args.model_dir, device=args.device, face_index=args.face_index,
                          initializer=args.initializer,
                          regressor_dir=args.regressor_dir, progress=not args.no_progress)
    if fitter is None:
        return 2
    bad_videos = []

    def frames_of(video: str, name: str):
        try:
            yield from frame_views(video, name, args.every, args.max_frames)
        except VideoError as exc:
            bad_videos.append(video)
            print(f"error: {video}: {exc}", file=sys.stderr)

    def items():
        for path, name in zip(photos, unique_names([name_of(p, i) for i, p in enumerate(photos)])):
            if is_video(path):
                yield from frames_of(path, name)
            else:
                yield name, path, path, None

    with fitter:
        try:
            # one video alone: its frames are in order, and the temporal term applies
            import dataclasses
            from .stages.joint import SamePersonSettings
            coarse = dataclasses.replace(fitter.settings("coarse"), photometric=False)
            detail = () if args.detail == ["none"] else tuple(args.detail)
            result = fitter.fit_views(items(), SamePersonSettings(coarse=coarse, detail=detail,
                                                                  frame_meshes=args.frame_meshes),
                                      ordered=len(photos) == 1 and is_video(photos[0]))
        except FitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for name, reason in result.skipped:
        print(f"error: {name}: {reason} (left out of the identity)", file=sys.stderr)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    try:
        result.save(out)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 1 if failed or result.skipped or bad_videos else 0


def _fitter_kwargs(args, stages) -> dict:
    """FaceFitter's arguments for a worker process or a Ray actor (plain data: they are pickled)."""
    return dict(stages=stages, device=args.device, face_index=args.face_index, all_faces=args.all_faces,
                initializer=args.initializer,
                regressor_dir=args.regressor_dir, batch_size=args.batch_size,
                fine_subdivisions=args.fine_subdivisions, progress=False)


def _run_on_ray(args, stages, photos, out: Path) -> int:
    """``--ray``: the photos (inputs already expanded) fitted by Ray actors (fitting.distributed)."""
    from .distributed import RayUnavailable, run_on_ray, write_summary
    fitter_kwargs = _fitter_kwargs(args, stages)
    try:
        rows = run_on_ray(photos, out, address=args.ray or None, workers=args.workers,
                          threads=args.threads_per_worker, gpus_per_worker=args.gpus_per_worker,
                          batch_size=args.batch_size, model_dir=args.model_dir, fitter_kwargs=fitter_kwargs,
                          retries=args.retries, progress=not args.no_progress)
    except RayUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_summary(rows, out / "summary.csv")
    for row in rows:
        if row.status == "failed":
            print(f"error: {row.name}: {row.error}", file=sys.stderr)
        elif row.status == "fitted":
            print(row.folder)
    done_before = sum(r.status == "done before" for r in rows)
    if done_before:
        print(f"{done_before} photo(s) already in {out}: skipped", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in rows) else 0


def _run_in_workers(args, stages, photos, workers: int, threads: int, out: Path, failed: int,
                    main_entry_unix: float, started: float) -> int:
    """The photos fitted by ``workers`` processes (fitting.workers); reports and exit codes as in-process."""
    from tqdm.auto import tqdm
    from .naming import name_of, unique_names
    from .workers import WorkerStartError, plan_tasks, run_workers

    parts = {"imports": time.perf_counter() - started}
    names = unique_names([name_of(p, i) for i, p in enumerate(photos)])
    tasks = plan_tasks(photos, names, workers, args.batch_size)
    fitter_kwargs = _fitter_kwargs(args, stages)
    written, face_timings = [], []

    def on_outcome(outcome) -> None:
        nonlocal failed
        face_timings.append(outcome.timings)
        if outcome.ok:
            written.append(outcome.folder)
        else:
            failed += 1
            tqdm.write(f"error: {outcome.name}: {outcome.error}", file=sys.stderr)

    try:
        stats = run_workers(tasks, workers=min(workers, len(tasks)), threads=threads, out=out,
                            model_dir=args.model_dir, fitter_kwargs=fitter_kwargs, stages=stages,
                            progress=not args.no_progress, on_outcome=on_outcome)
    except WorkerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    position = {name: i for i, name in enumerate(names)}  # printed in the photos' order, as in-process
    for folder in sorted(written, key=lambda f: (position.get(Path(f).name.split("#face")[0], len(names)), f)):
        print(folder)
    if args.timings:
        # Parts summed over the workers, which ran side by side: they add up to more than the wall time.
        parts["load"] = max(s.imports_s + s.load_s for s in stats)
        parts["writing"] = sum(s.writing_s for s in stats)
        parts["total"] = time.perf_counter() - started
        parts["workers"] = len(stats)
        parts["threads_per_worker"] = threads
        parts["workers_peak_mib"] = sum(s.peak_mib for s in stats)
        write_timings(Path(args.timings), main_entry_unix, parts, face_timings, faces=len(written))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
