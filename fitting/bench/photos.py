"""Photo bench: the whole pipeline on real photographs, with the measures the issues judge photos by.

    python -m fitting.bench photos [--faces DIR] [--no-astronaut] [--stages coarse,medium,fine] [--out DIR]
                                   [--initializer auto|3ddfa_v2|none] [--3ddfa-dir DIR]

Real photos have no 3D truth; what can be measured is printed per photo:

- yaw (deg) of the coarse fit;
- landmark error after the coarse and the medium stage, as a percentage of
  the inter-ocular distance (MediaPipe's points against where the fitted
  surface puts them, pose-dependent offsets included);
- medium vs coarse: triangles turned inside out (normal turned > 90 deg) and
  the largest change of a vertex's uniform Laplacian (mm: a spike shows here);
- fine: PSNR (dB) and SSIM of the re-rendered face (albedo x shading +
  specular) inside the face mask;
- seconds for the whole fit of that photo (model and detector loaded once,
  before the clock starts).

Photos: every .jpg/.jpeg/.png in ``--faces`` (default: the project's shared
``faces`` folder beside the repository, or ``$FACEFIT_SHARED/faces``), plus
scikit-image's astronaut unless ``--no-astronaut``. ``--out DIR`` also saves
each result (meshes, maps, report picture) for a person to look at. ``--initializer none`` fits
without the 3DDFA_V2 regressor even where its files are present, for a before/after in one run.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import add_initializer_arguments

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
ASTRONAUT = "astronaut"


def default_faces_dir() -> Path:
    shared = os.environ.get("FACEFIT_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return base / "faces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faces", default=None, help="folder of photos (default: the shared faces folder)")
    p.add_argument("--no-astronaut", action="store_true", help="leave out scikit-image's astronaut")
    p.add_argument("--stages", default="coarse,medium,fine", help="stages to run (default: all three)")
    p.add_argument("--crop-size", type=int, default=512, help="working crop side, pixels (default 512, as the API)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--out", default=None, help="also save every result under this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_initializer_arguments(p, "the coarse stage's start, as fit-face's --initializer (default auto: the "
                                 "3DDFA_V2 regressor fused with MediaPipe when its files are present)")


def _sources(args) -> List[tuple]:
    folder = Path(args.faces) if args.faces else default_faces_dir()
    if args.faces and not folder.is_dir():
        raise SystemExit(f"photos bench: --faces {folder} is not a folder")
    photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if folder.is_dir() else []
    out = [(p.stem, str(p)) for p in photos]
    if not args.no_astronaut:
        import skimage.data
        out.append((ASTRONAUT, skimage.data.astronaut()))
    if not out:
        raise SystemExit(f"photos bench: no photos in {folder} and --no-astronaut given")
    return out


def _mean(values) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _fmt(x: Optional[float], spec: str) -> str:
    """``format(x, spec)``, or "n/a" right-aligned to the same width when there is no number."""
    width = int(re.match(r"\d*", spec).group() or 0)
    return "n/a".rjust(width) if x is None or not np.isfinite(x) else format(x, spec)


def run(args) -> int:
    from fitting.api import FaceFitter
    from fitting.stages.laplacian import uniform_laplacian
    from fitting.stages.medium import count_flipped_triangles, max_laplacian_change

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    sources = _sources(args)
    rows, failed = [], []
    with FaceFitter(stages, model_dir=args.model_dir, crop_size=args.crop_size, initializer=args.initializer,
                    regressor_dir=args.ddfa_dir) as fitter:
        start = "3DDFA_V2 regressor fused" if fitter.context.initializer is not None else "no initialiser"
        lap = uniform_laplacian(fitter.model.triangles, fitter.model.n_vertices) if "medium" in stages else None
        for name, src in tqdm(sources, desc="photos", unit="photo", disable=args.no_progress):
            t0 = time.perf_counter()
            res = fitter.fit_many([src], names=[name])[0]
            seconds = time.perf_counter() - t0
            if not res.ok:
                failed.append((name, res.error))
                continue
            e = res.params.get("landmark_error_iod", {})
            row = {"name": name, "yaw": res.params["pose_deg"]["yaw"], "coarse": 100 * e.get("coarse", np.nan),
                   "medium": 100 * e.get("medium", np.nan), "seconds": seconds, "flips": None, "lap": None,
                   "psnr": np.nan, "ssim": np.nan}
            if lap is not None:
                c, m = res.meshes["coarse"].vertices, res.meshes["medium"].vertices
                row["flips"] = count_flipped_triangles(c, m, fitter.model.triangles)
                row["lap"] = max_laplacian_change(c, m, lap)
            if "fine" in res.params:
                row["psnr"], row["ssim"] = res.params["fine"]["psnr_db"], res.params["fine"]["ssim"]
            if args.out:
                res.save(Path(args.out) / name)
            rows.append(row)

    head = f"{'photo':30s} {'yaw':>6s} {'coarse %IOD':>12s} {'medium %IOD':>12s} {'flips':>6s} " \
           f"{'max dL mm':>10s} {'PSNR dB':>8s} {'SSIM':>7s} {'s':>6s}"
    print()
    print(f"photos bench: {len(rows)} of {len(sources)} photos fitted, stages {','.join(stages)}, "
          f"crop {args.crop_size} px, start: {start}, torch threads {torch.get_num_threads()}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name'][:30]:30s} {r['yaw']:+6.1f} {_fmt(r['coarse'], '12.2f')} {_fmt(r['medium'], '12.2f')} "
              f"{'n/a' if r['flips'] is None else r['flips']:>6} {_fmt(r['lap'], '10.2f')} "
              f"{_fmt(r['psnr'], '8.2f')} {_fmt(r['ssim'], '7.4f')} {r['seconds']:6.1f}")
    if rows:
        print("-" * len(head))
        folder_rows = [r for r in rows if r["name"] != ASTRONAUT]
        means = [("mean, photos of the folder", folder_rows)]
        if len(folder_rows) < len(rows):
            means.append(("mean, with the astronaut", rows))
        for title, subset in means:
            if not subset:
                continue
            mean = lambda key: _mean([r[key] for r in subset])  # noqa: E731
            print(f"{title:37s} {_fmt(mean('coarse'), '12.2f')} {_fmt(mean('medium'), '12.2f')} "
                  f"{'':6s} {'':10s} {_fmt(mean('psnr'), '8.2f')} {_fmt(mean('ssim'), '7.4f')} {mean('seconds'):6.1f}")
        if "medium" in stages:
            lower = sum(r["medium"] < r["coarse"] for r in rows)
            print(f"medium lowers the landmark error on {lower}/{len(rows)} photos; flipped triangles in all: "
                  f"{sum(r['flips'] for r in rows)}; largest Laplacian change {max(r['lap'] for r in rows):.2f} mm")
    for name, why in failed:
        print(f"FAILED {name}: {why}")
    print("Landmark error: MediaPipe's points vs the fitted landmark points projected, mean over the weighted "
          "landmarks, % of the inter-ocular distance. PSNR/SSIM inside the fine stage's face mask. Seconds: the "
          "whole fit of one photo, model and detector already loaded.")
    return 1 if failed or not rows else 0
