"""Medium-stage bench: does the Laplacian deformation recover out-of-model shape? Coarse vs medium on synthetic faces.

    python -m fitting.bench medium --n 50 --seed 0 [--model-dir DIR]

The synthetic faces carry a smooth out-of-model deformation (a few Gaussian
RBF offsets of 1-4 mm, ``FaceGenerator(deformation=True)``) that the 3DMM
cannot represent. Rows: the coarse stage (least squares,
``CoarseSettings(photometric=False)``) and the medium stage
(:func:`fitting.stages.medium.run` on that coarse result, default
``MediumSettings``). Errors as in the coarse bench; the relative change of
medium vs coarse is printed below the table. Time: each stage's own wall
time per face (medium comes on top of coarse), chunks of ``--chunk``.

Two more rows (``--no-oracle`` leaves them out) run both stages on exact
landmarks, the true projections of the table's surface points
(:func:`fitting.bench.common.oracle_crop`, coarse with
``landmark_offsets=False``): what the deformation recovers when the detector
is perfect, which separates the detector's error from the stage's reach.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import (RowStats, add_common_arguments, chunks, format_table, landmark_error_photo_px,
                     landmark_mask, measures_note, narrow_area, oracle_crop, setup_from_args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--correspondence", choices=("table", "index_map"), default=None,
                   help="medium stage landmark correspondence (default: MediumSettings' default)")
    p.add_argument("--no-oracle", action="store_true",
                   help="leave out the rows fed exact landmarks (the true projections of the table's surface points)")


def run(args) -> int:
    from fitting.stages.coarse import CoarseSettings, fit_landmarks
    from fitting.detections import DetectionBatch
    from fitting.stages.landmark_fit import reprojection_residual
    from fitting.rendering.renderer import Renderer
    from fitting.stages import medium as medium_stage
    from fitting.stages.context import FitContext
    from fitting.stages.medium import MediumSettings

    progress = not args.no_progress
    face_model, closed_model, corr, data = setup_from_args(args, deformation=True)
    faces = data.detected
    mask = landmark_mask(corr)
    narrow = narrow_area(face_model)
    coarse_settings = CoarseSettings(photometric=False)
    oracle_settings = CoarseSettings(photometric=False, landmark_offsets=False)
    medium_settings = MediumSettings() if args.correspondence is None else MediumSettings(
        correspondence=args.correspondence)
    context = FitContext(model=face_model, correspondence=corr, renderer=Renderer("cpu"), device=face_model.device,
                         settings={"medium": medium_settings})

    rows = {"coarse": RowStats("coarse (least squares)"), "medium": RowStats("medium (Laplacian)")}
    if not args.no_oracle:
        rows.update(coarse_exact=RowStats("coarse, exact landmarks"), medium_exact=RowStats("medium, exact landmarks"))
    runs = [("", coarse_settings, False)] + ([] if args.no_oracle else [("_exact", oracle_settings, True)])
    bar = tqdm(total=len(faces), desc="coarse + medium", unit="face", disable=not progress)
    for chunk in chunks(faces, max(1, args.chunk)):
        b = len(chunk)
        for suffix, settings, exact in runs:
            crops = [oracle_crop(f, corr) if exact else f.crop for f in chunk]
            batch = DetectionBatch.stack(crops)
            t0 = time.perf_counter()
            coarse = fit_landmarks(face_model, batch, corr, settings)
            t1 = time.perf_counter()
            medium = medium_stage.run(context, batch, coarse).vertices
            t2 = time.perf_counter()
            cam = coarse.camera
            for key, verts, dt in (("coarse", coarse.vertices, t1 - t0), ("medium", medium, t2 - t1)):
                pts = coarse.landmark_points(corr, verts.to(cam.rotation))
                uv = reprojection_residual(pts, cam.rotation, cam.translation, torch.zeros_like(pts[..., :2]),
                                           cam.intrinsics).detach().cpu().numpy()
                v = verts.detach().cpu().numpy()
                for i, f in enumerate(chunk):
                    rows[key + suffix].add(v[i], f.truth, narrow, landmark_error_photo_px(uv[i], crops[i], mask),
                                           dt / b)
        bar.update(b)
    bar.close()

    deform = np.array([f.deformation_mm for f in faces]) if faces else np.array([np.nan])
    print()
    print(f"medium bench: {data.header()}")
    print(format_table(list(rows.values())))
    for suffix, _, exact in runs:
        c, m = rows["coarse" + suffix].summary(), rows["medium" + suffix].summary()
        rel = lambda key: 100.0 * (m[key] - c[key]) / c[key] if c[key] else float("nan")  # noqa: E731
        print(f"medium vs coarse{', exact landmarks' if exact else ''}: mean error {rel('mean_mm'):+.1f} %, "
              f"median error {rel('median_mm'):+.1f} %, narrow-face mean error {rel('narrow_mm'):+.1f} %, "
              f"landmark error {rel('landmark_px'):+.1f} %")
    print()
    print(measures_note(face_model))
    print(f"Out-of-model deformation in the truth: mean |offset| over the face area {np.nanmean(deform):.2f} mm "
          f"(per face {np.nanmin(deform):.2f}-{np.nanmax(deform):.2f} mm).")
    print(f"coarse: fit_landmarks, CoarseSettings(photometric=False); medium: the medium stage (fitting.stages.medium.run) with "
          f"MediumSettings(correspondence={medium_settings.correspondence!r}, iterations={medium_settings.iterations}, "
          f"weight_scale={medium_settings.weight_scale:g}, displacement prior alpha={medium_settings.alpha:.3g}); "
          f"both projected with the coarse camera. CPU, chunks of "
          f"{args.chunk}; time = each stage's own chunk time / faces.")
    if not args.no_oracle:
        print("exact landmarks: both stages fed the true projections of the correspondence table's surface points on "
              "the true (deformed) mesh instead of MediaPipe's (coarse with landmark_offsets=False); landmark errors "
              "against those points.")
    print(f"not timed: synthetic generation {data.seconds_generate / max(1, len(data.faces)):.2f} s/face, "
          f"MediaPipe + crop {data.seconds_detect / max(1, len(data.faces)):.2f} s/face; "
          f"torch threads {torch.get_num_threads()}.")
    return 0 if faces else 1
