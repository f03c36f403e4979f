"""Same-person bench: one identity from N photos (joint fit) against single-photo fits, synthetic faces.

    python -m fitting.bench same-person --n 5 --views 8 --seed 0 [--model-dir DIR]

Part (a) of issue 18. ``--n`` synthetic people; person ``p`` has one random
identity (seed ``(seed, p)``) and ``--views`` photos of it, each with its own
random pose (|yaw| <= ``--yaw-max``), expression (0-3 mild activations),
light, albedo and camera (seed ``(seed, p, v)``; :class:`fitting.synthetic.FaceGenerator`
with ``id_coeffs``). Every photo goes through MediaPipe and the crop as the API does.

For N = 1, 2, 4, 8 (the first N views of each person), identity error in mm:
the fitted neutral mesh (identity, no expression) against the true neutral
mesh, mean per-vertex distance after a similarity alignment, over the face
area (as bench coarse measures shape). Rows:

- single-view fits: :func:`fitting.stages.coarse.fit_landmarks` (least squares,
  no photometric polish) on each of the N views alone, error averaged over the views;
- single-view identities averaged: the mean of those fits' identity coefficients;
- joint: :func:`fitting.stages.joint.fit_same_person` on the N views.

Also measured: the expression-weight error of the joint fit (mean |fitted - true|
over the 53 weights and the views), and the disagreement check's distances (each
view's single-view neutral mesh from the joint one, mm) for views of one person
and for a mixed set (view v of person v mod n: different people), which is what
``SamePersonSettings.disagreement_mm`` is set from.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import DEFAULT_YAW_MAX, load_models, vertex_errors

VIEW_COUNTS = (1, 2, 4, 8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=5, help="number of synthetic people (default 5)")
    p.add_argument("--views", type=int, default=8, help="photos per person (default 8; N runs up to this)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--size", type=int, default=512, help="synthetic image side, pixels (default 512)")
    p.add_argument("--yaw-max", type=float, default=DEFAULT_YAW_MAX,
                   help=f"largest |yaw| of the synthetic views, degrees (default {DEFAULT_YAW_MAX:g})")
    p.add_argument("--no-oracle", action="store_true",
                   help="leave out the rows fed exact landmarks (the true projections of the table's surface points)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_people(face_model, closed_model, n: int, views: int, seed: int, size: int, yaw_max: float,
                progress: bool = True):
    """``n`` people x ``views`` photos: a list of dicts ``{"id": (n_id,), "views": [BenchFace, ...]}``
    (:class:`fitting.bench.common.BenchFace`; ``crop`` None where MediaPipe missed the face) and
    ``"exp"``: the views' true expression weights (views, n_exp)."""
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from landmarks import FaceMeshDetector
    from .common import BenchFace, _generator

    gen = _generator(closed_model)
    people = []
    with FaceMeshDetector() as det:
        bar = tqdm(total=n * views, desc="synthetic views", unit="photo", disable=not progress)
        for p in range(n):
            rng = np.random.default_rng((seed, p))
            id_c = torch.tensor(np.clip(rng.normal(size=closed_model.n_id), -2, 2), dtype=torch.float32)
            person = {"id": id_c, "views": [], "exp": []}
            for v in range(views):
                sf = gen((seed, p, v), size=size, yaw_range=yaw_max, fov_deg=DEFAULT_FOV, id_coeffs=id_c)
                faces = det.detect(sf.image)
                nv = face_model.n_vertices
                face = BenchFace(index=v, seed=(seed, p, v), truth=sf.verts_model[:nv].astype(np.float64),
                                 yaw=float(sf.params["pose_deg"]["yaw"]), deformation_mm=0.0,
                                 n_faces_found=len(faces), truth_camera=sf.verts_camera[:nv].astype(np.float64))
                if faces:
                    face.crop = crop_face(sf.image, faces[0], 512, f"person{p}_view{v}", DEFAULT_FOV)
                person["views"].append(face)
                person["exp"].append(torch.tensor(sf.params["exp_coeffs"]))
                bar.update(1)
            person["exp"] = torch.stack(person["exp"])
            people.append(person)
        bar.close()
    return people


def score(face_model, corr, people, counts, settings, exact: bool = False, narrow=None):
    """Identity errors (mm) of single-view and joint fits for each N in ``counts``, over ``people``.

    ``exact``: fit the true projections of the table's surface points instead of MediaPipe's
    (:func:`fitting.bench.common.oracle_crop`; ``settings.coarse.landmark_offsets`` should be off).
    Returns ``{N: {"single", "averaged", "joint", "joint_narrow", "single_narrow", "exp", "seconds":
    [per person]}}`` and the joint fits' disagreement distances at the largest N (mm, one per view).
    """
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import fit_landmarks
    from fitting.stages.joint import fit_same_person
    from .common import oracle_crop

    zeros = torch.zeros(1, face_model.n_exp)

    def neutral(id_c):
        return face_model(id_c.reshape(1, -1), zeros)[0].numpy()

    def err(mesh, truth, area=None):
        return float(vertex_errors(mesh, truth, area).mean())

    keys = ("single", "averaged", "joint", "single_narrow", "joint_narrow", "exp", "seconds")
    out = {c: {k: [] for k in keys} for c in counts}
    distances = []
    for person in people:
        truth = neutral(person["id"])
        found = [v for v, f in enumerate(person["views"]) if f.crop is not None]
        if not found:
            continue
        crops = [oracle_crop(person["views"][v], corr) if exact else person["views"][v].crop for v in found]
        alone = fit_landmarks(face_model, DetectionBatch.stack(crops), corr, settings.coarse)  # each view alone
        alone_mesh = [neutral(a) for a in alone.id_coeffs]
        for c in counts:
            if c > len(crops):
                continue
            row = out[c]
            row["single"].append(float(np.mean([err(m, truth) for m in alone_mesh[:c]])))
            row["single_narrow"].append(float(np.mean([err(m, truth, narrow) for m in alone_mesh[:c]])))
            row["averaged"].append(err(neutral(alone.id_coeffs[:c].mean(0)), truth))
            fit = fit_same_person(face_model, DetectionBatch.stack(crops[:c]), corr, settings)
            row["seconds"].append(fit.seconds)
            row["joint"].append(err(fit.neutral.numpy(), truth))
            row["joint_narrow"].append(err(fit.neutral.numpy(), truth, narrow))
            row["exp"].append(float((fit.exp_coeffs - person["exp"][found[:c]]).abs().mean()))
            if c == max(counts) and fit.disagreement_mm is not None:
                distances += fit.disagreement_mm.tolist()
    return out, distances


def format_rows(rows, counts) -> str:
    head = (f"{'N views':>8}{'single-view mm':>16}{'singles averaged mm':>21}{'joint mm':>10}{'joint / single':>16}"
            f"{'narrow: single':>16}{'joint':>8}{'ratio':>7}{'exp weight err':>16}{'joint s':>9}{'people':>8}")
    lines = [head, "-" * len(head)]
    for c in counts:
        r = rows[c]
        if not r["joint"]:
            continue
        s, j, sn, jn = (float(np.mean(r[k])) for k in ("single", "joint", "single_narrow", "joint_narrow"))
        lines.append(f"{c:>8d}{s:>16.3f}{np.mean(r['averaged']):>21.3f}{j:>10.3f}{j / s:>16.3f}{sn:>16.3f}"
                     f"{jn:>8.3f}{jn / sn:>7.3f}{np.mean(r['exp']):>16.4f}{np.mean(r['seconds']):>9.2f}"
                     f"{len(r['joint']):>8d}")
    return "\n".join(lines)


def run(args) -> int:
    import dataclasses
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person
    from .common import narrow_area

    face_model, closed_model = load_models(args.model_dir)
    corr = load_correspondence()
    narrow = narrow_area(face_model)
    settings = SamePersonSettings()
    t0 = time.perf_counter()
    people = make_people(face_model, closed_model, args.n, args.views, args.seed, args.size, args.yaw_max,
                         progress=not args.no_progress)
    t_gen = time.perf_counter() - t0
    counts = [c for c in VIEW_COUNTS if c <= args.views]
    found = sum(f.crop is not None for p in people for f in p["views"])
    rows, same_dist = score(face_model, corr, people, counts, settings, narrow=narrow)
    # different people in one set: view v of person v mod n
    mixed = [people[v % len(people)]["views"][v].crop for v in range(args.views)]
    mixed = [c for c in mixed if c is not None]
    mixed_dist = []
    if len(people) > 1 and len(mixed) > 1:
        mixed_dist = fit_same_person(face_model, DetectionBatch.stack(mixed), corr, settings).disagreement_mm.tolist()
    exact_rows = None
    if not args.no_oracle:
        exact = SamePersonSettings(coarse=dataclasses.replace(settings.coarse, landmark_offsets=False),
                                   lambda_id=settings.lambda_id, check_disagreement=False)
        exact_rows, _ = score(face_model, corr, people, counts, exact, exact=True, narrow=narrow)

    print()
    print(f"same-person bench: {args.n} synthetic people x {args.views} views, seed={args.seed}, "
          f"|yaw|<={args.yaw_max:g} deg, {args.size} px; MediaPipe found {found}/{args.n * args.views} views")
    print("MediaPipe's landmarks (the real path):")
    print(format_rows(rows, counts))
    if rows.get(8) and rows[8]["joint"]:
        ratio = np.mean(rows[8]["joint"]) / np.mean(rows[8]["single"])
        print(f"issue 18 (a): joint 8-view identity error <= 0.75 x single-view: {ratio:.3f} "
              f"({'met' if ratio <= 0.75 else 'NOT met'})")
    if exact_rows is not None:
        print()
        print("exact landmarks (true projections of the table's surface points; the solver's ceiling):")
        print(format_rows(exact_rows, counts))
    print()
    fmt = lambda xs: (f"median {np.median(xs):.2f}, min {np.min(xs):.2f}, max {np.max(xs):.2f} mm"  # noqa: E731
                      if xs else "n/a")
    print(f"disagreement (each view's single-view neutral mesh vs the joint one, mean vertex distance, MediaPipe): "
          f"one person {fmt(same_dist)}; mixed people {fmt(mixed_dist)}; warning threshold "
          f"{settings.disagreement_mm:g} mm")
    print("Errors: identity = neutral meshes (no expression), mean per-vertex distance after a similarity "
          "alignment over the ICT face area ('narrow': ICT's face_narrow set, the front of the face); "
          "'single-view mm' averages the N views' own fits; 'singles averaged' fits each view alone and "
          "averages the identity coefficients; 'exp weight err' = mean |fitted - true| over the 53 expression "
          "weights of the N views (joint fit). Landmark least squares only (no photometric polish), CPU, "
          f"torch threads {torch.get_num_threads()}; 'joint s' = seconds per joint fit (with its single-view "
          f"disagreement check on the MediaPipe rows). Not timed: synthetic generation and MediaPipe {t_gen:.1f} s.")
    return 0 if found else 1
