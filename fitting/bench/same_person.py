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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_people(face_model, closed_model, n: int, views: int, seed: int, size: int, yaw_max: float,
                progress: bool = True):
    """``n`` people x ``views`` photos: a list of dicts ``{"id": (n_id,), "views": [(crop or None,
    true exp (n_exp,)), ...]}``; a view MediaPipe misses has crop None."""
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from landmarks import FaceMeshDetector
    from .common import _generator

    gen = _generator(closed_model)
    people = []
    with FaceMeshDetector() as det:
        bar = tqdm(total=n * views, desc="synthetic views", unit="photo", disable=not progress)
        for p in range(n):
            rng = np.random.default_rng((seed, p))
            id_c = torch.tensor(np.clip(rng.normal(size=closed_model.n_id), -2, 2), dtype=torch.float32)
            person = {"id": id_c, "views": []}
            for v in range(views):
                sf = gen((seed, p, v), size=size, yaw_range=yaw_max, fov_deg=DEFAULT_FOV, id_coeffs=id_c)
                faces = det.detect(sf.image)
                crop = crop_face(sf.image, faces[0], 512, f"person{p}_view{v}", DEFAULT_FOV) if faces else None
                person["views"].append((crop, torch.tensor(sf.params["exp_coeffs"])))
                bar.update(1)
            people.append(person)
        bar.close()
    return people


def run(args) -> int:
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import fit_landmarks
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person

    face_model, closed_model = load_models(args.model_dir)
    corr = load_correspondence()
    settings = SamePersonSettings()
    t0 = time.perf_counter()
    people = make_people(face_model, closed_model, args.n, args.views, args.seed, args.size, args.yaw_max,
                         progress=not args.no_progress)
    t_gen = time.perf_counter() - t0
    zeros = torch.zeros(1, face_model.n_exp)

    def neutral(id_c):
        return face_model(id_c.reshape(1, -1), zeros)[0].numpy()

    counts = [c for c in VIEW_COUNTS if c <= args.views]
    single, averaged, joint, exp_err, joint_s = ({c: [] for c in counts} for _ in range(5))
    same_dist, found, missed = [], 0, 0
    for person in tqdm(people, desc="fits", unit="person", disable=args.no_progress):
        truth = neutral(person["id"])
        crops = [(c, e) for c, e in person["views"] if c is not None]
        found += len(crops)
        missed += len(person["views"]) - len(crops)
        if not crops:
            continue
        batch_all = DetectionBatch.stack([c for c, _ in crops])
        alone = fit_landmarks(face_model, batch_all, corr, settings.coarse)  # each view alone
        alone_err = [float(vertex_errors(neutral(a), truth).mean()) for a in alone.id_coeffs]
        for c in counts:
            if c > len(crops):
                continue
            single[c].append(float(np.mean(alone_err[:c])))
            averaged[c].append(float(vertex_errors(neutral(alone.id_coeffs[:c].mean(0)), truth).mean()))
            batch = DetectionBatch.stack([cr for cr, _ in crops[:c]])
            fit = fit_same_person(face_model, batch, corr, settings)
            joint_s[c].append(fit.seconds)
            joint[c].append(float(vertex_errors(fit.neutral.numpy(), truth).mean()))
            true_exp = torch.stack([e for _, e in crops[:c]])
            exp_err[c].append(float((fit.exp_coeffs - true_exp).abs().mean()))
            if c == max(counts):
                same_dist += fit.disagreement_mm.tolist()

    # different people in one set: view v of person v mod n
    mixed = [people[v % len(people)]["views"][v][0] for v in range(args.views)]
    mixed = [c for c in mixed if c is not None]
    mixed_dist = []
    if len({v % len(people) for v in range(args.views)}) > 1 and len(mixed) > 1:
        mixed_dist = fit_same_person(face_model, DetectionBatch.stack(mixed), corr, settings).disagreement_mm.tolist()

    print()
    print(f"same-person bench: {args.n} synthetic people x {args.views} views, seed={args.seed}, "
          f"|yaw|<={args.yaw_max:g} deg, {args.size} px; MediaPipe found {found}/{found + missed} views")
    head = f"{'N views':>8}{'single-view mm':>16}{'singles averaged mm':>21}{'joint mm':>10}" \
           f"{'joint / single':>16}{'exp weight err':>16}{'joint s':>9}{'people':>8}"
    print(head)
    print("-" * len(head))
    for c in counts:
        if not joint[c]:
            continue
        s, a, j = np.mean(single[c]), np.mean(averaged[c]), np.mean(joint[c])
        print(f"{c:>8d}{s:>16.3f}{a:>21.3f}{j:>10.3f}{j / s:>16.3f}{np.mean(exp_err[c]):>16.4f}"
              f"{np.mean(joint_s[c]):>9.2f}{len(joint[c]):>8d}")
    if joint.get(8):
        ratio = np.mean(joint[8]) / np.mean(single[8])
        print(f"issue 18 (a): joint 8-view identity error <= 0.75 x single-view: {ratio:.3f} "
              f"({'met' if ratio <= 0.75 else 'NOT met'})")
    print()
    fmt = lambda xs: (f"median {np.median(xs):.2f}, min {np.min(xs):.2f}, max {np.max(xs):.2f} mm"  # noqa: E731
                      if xs else "n/a")
    print(f"disagreement (single-view neutral vs joint neutral, mean vertex distance): one person "
          f"{fmt(same_dist)}; mixed people {fmt(mixed_dist)}; warning threshold "
          f"{settings.disagreement_mm:g} mm")
    print("Errors: identity = neutral meshes (no expression), mean per-vertex distance after a similarity "
          "alignment over the ICT face area; 'single-view mm' averages the N views' own fits; 'singles "
          "averaged' fits each view alone and averages the identity coefficients; 'exp weight err' = mean "
          "|fitted - true| over the 53 expression weights of the N views (joint fit). Landmark least squares "
          f"only (no photometric polish), CPU, torch threads {torch.get_num_threads()}; "
          f"'joint s' = seconds per joint fit (with its single-view disagreement check). "
          f"Not timed: synthetic generation and MediaPipe {t_gen:.1f} s.")
    return 0 if found else 1
