"""Fit every photo in a folder with the Python API and write a summary table.

    python examples/fit_folder.py FOLDER [--out DIR] [--stages coarse,medium,fine]

One ``FaceFitter`` loads the model and MediaPipe once; ``iter_fit`` fits the
photos in batches and hands over each result as it is done (saved, then let
go: memory stays flat however many photos), and a photo that cannot be fitted
is reported in its result while the others go on. Writes ``DIR/<photo>/`` per
face (as ``fit-face`` does) and ``DIR/summary.csv``, one row per face: landmark
error per stage (% of the inter-ocular distance), head yaw, the re-rendered
photo's PSNR/SSIM, seconds of the stages (per face, a batch's time shared among
its faces).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from fitting.checks import folder_problem
from fitting.stages import check_stages

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
COLUMNS = ["photo", "file", "ok", "error", "yaw_deg", "coarse_iod_pct", "medium_iod_pct", "psnr_db", "ssim", "seconds"]


def summary_row(result) -> dict:
    """One CSV row of a FitResult (empty cells where a stage did not run or the fit failed)."""
    p = result.params
    iod = p.get("landmark_error_iod", {})
    fine = p.get("fine", {})
    pct = lambda v: "" if v is None else f"{100 * v:.2f}"  # noqa: E731
    num = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
    return {"photo": result.name, "file": Path(result.source).name if result.source else "",
            "ok": result.ok, "error": result.error or "",
            "yaw_deg": num(p.get("pose_deg", {}).get("yaw"), "+.1f"),
            "coarse_iod_pct": pct(iod.get("coarse")), "medium_iod_pct": pct(iod.get("medium")),
            "psnr_db": num(fine.get("psnr_db"), ".2f"), "ssim": num(fine.get("ssim"), ".4f"),
            "seconds": num(sum(result.timings.values()) if result.ok else None, ".1f")}


def main(argv=None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for SIGINT (128 + 2)
        print("interrupted", file=sys.stderr)
        return 130


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a folder of photos")
    ap.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    ap.add_argument("--stages", default="coarse,medium,fine", help="comma-separated stages, from coarse on")
    args = ap.parse_args(argv)
    # Checked before anything is created or loaded (the model and MediaPipe take seconds).
    if not args.folder.is_dir():
        return fail(f"{args.folder}: {'not a folder' if args.folder.exists() else 'no such folder'}")
    try:
        stages = check_stages(args.stages)
        photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    except (ValueError, OSError) as exc:  # OSError: a folder that cannot be listed
        return fail(str(exc))
    if not photos:
        return fail(f"no photos in {args.folder}")
    problem = folder_problem(args.out)
    if problem:
        return fail(f"cannot write to {args.out}: {problem}")

    from fitting import FaceFitter

    args.out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    with FaceFitter(stages=stages, progress=True) as fitter:
        # iter_fit hands over each result as it is done: save it, keep its row, let it go
        for result in fitter.iter_fit(photos):
            if result.ok:
                result.save(args.out / result.name)
            else:
                failed.append(result)
            rows.append((result.index, summary_row(result)))
    rows = [row for _, row in sorted(rows, key=lambda r: r[0])]
    with open(args.out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for r in failed:
        print(f"{r.name}: {r.error}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} fitted; table: {args.out / 'summary.csv'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
