"""Coarse-stage bench: shape and landmark error of the 3DMM fit on synthetic faces, against the mean face and eos.

    python -m fitting.bench coarse --n 50 --seed 0 [--model-dir DIR] [--no-eos] [--no-photometric]

Rows:

- mean shape: the model's mean face, similarity-aligned to the truth (the
  shape error of fitting nothing); its landmark error uses the best rigid
  pose of the mean face (the coarse stage's own affine + perspective pose
  solve, with no shape fit);
- ours, least squares: :func:`fitting.stages.coarse.fit_landmarks` with
  ``CoarseSettings(photometric=False)``, identity and expressions;
- ours, LS, 3DDFA_V2 fused: the same with the regressor's start pose and 68 points
  (:mod:`fitting.stages.fusion`), as ``fit-face`` runs when the regressor's files are there
  (``--initializer none`` or no files: not run);
- ours + photometric: the same followed by
  :func:`fitting.stages.photometric.photometric_refine` (``photometric=True``);
  "n/a" when that module cannot be imported;
- ours, exact landmarks: the least squares fed the true projections of the
  table's surface points instead of MediaPipe's
  (:func:`fitting.bench.common.oracle_crop`), once with the shipped priors and
  once with them 100 times weaker (the shipped ones are set for MediaPipe's
  noise): the ceiling of the solver and the model, which separates what the
  detector costs from what the fit does (``--no-oracle`` leaves both out);
- eos: ``eos.fitting.fit_shape_to_landmarks_linear`` on a PCA model built
  from the ICT identity basis (see :func:`eos_pca_model`), fed the same
  MediaPipe points and correspondences, with eos's own affine camera. Identity
  only: eos fits no ICT expressions.

Our stages run on chunks of ``--chunk`` faces (as the API batches them); the
time column is the chunk's wall time divided by its faces. Synthetic
generation and MediaPipe are not in any row's time (the same for all).
"""
from __future__ import annotations

import argparse
import time
from typing import List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import (RowStats, add_common_arguments, add_initializer_arguments, chunks, format_table,
                     landmark_error_photo_px, landmark_mask, measures_note, narrow_area, oracle_crop,
                     regressor_context, setup_from_args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--no-eos", action="store_true", help="leave out the eos-py row")
    p.add_argument("--no-photometric", action="store_true", help="leave out the photometric-refinement row")
    p.add_argument("--no-oracle", action="store_true",
                   help="leave out the row fed exact landmarks (the true projections of the table's surface points)")
    p.add_argument("--eos-iterations", type=int, default=3,
                   help="eos: camera / shape alternations (1 = one camera on the mean, one shape solve; default 3)")
    p.add_argument("--eos-lambda", type=float, default=3.0, help="eos: shape regulariser (eos's default 3.0)")
    add_initializer_arguments(p, "the 'fused' row: the 3DDFA_V2 regressor's pose and 68 points with MediaPipe's, "
                                 "as fit-face fits (auto: when its files are on this machine)")


# --------------------------------------------------------------------------- eos

def eos_pca_model(model, check: Optional[dict] = None):
    """An ``eos.morphablemodel.PcaModel`` with the ICT face's identity prior.

    ICT's identity deltas ``D`` (n_id modes of V x 3, mm) are one-sigma
    modes: shapes are ``mean + D^T a`` with ``a ~ N(0, I)``, covariance
    ``D^T D``. They are *not* mutually orthogonal, so normalising each mode
    (eigenvalue = its squared norm) would change the prior. The SVD
    ``D^T = U S W^T`` gives the same Gaussian exactly: orthonormal basis
    ``U``, eigenvalues ``S^2`` (eos rescales by ``sqrt(eigenvalue)``, so its
    rescaled basis spans the same space with the same prior). ``check``, if
    given, receives the largest off-diagonal |cosine| between modes.
    """
    import eos

    d = model.id_basis.reshape(model.n_id, -1).double().cpu()  # (n_id, 3V)
    gram = d @ d.T
    norms = gram.diagonal().sqrt()
    cos = gram / norms[:, None] / norms[None]
    max_cos = float((cos - torch.eye(len(cos), dtype=cos.dtype)).abs().max())
    u, s, _ = torch.linalg.svd(d.T, full_matrices=False)  # (3V, n_id), (n_id,)
    if check is not None:
        check["max_abs_cos"] = max_cos
    mean = model.mean.reshape(-1, 1).cpu().numpy().astype(np.float32)
    tris = model.triangles.cpu().numpy().astype(int).tolist()
    return eos.morphablemodel.PcaModel(mean, u.numpy().astype(np.float32),
                                       (s ** 2).numpy().astype(np.float32).reshape(-1, 1), tris)


def eos_fit(pca, crop, vertex_ids: np.ndarray, mask: np.ndarray, iterations: int, lam: float):
    """Fit one face with eos: returns (V, 3) vertices (model frame, mm) and (K, 2) projected points (crop px)
    of ``vertex_ids`` (one vertex per landmark).

    Image points are crop pixels, v down: eos is told so with
    ``is_viewport_upsidedown=True`` and the crop height, and its
    ``get_3x4_affine_camera_matrix`` maps model points straight to those pixels.
    Alternation as eos's own fitting loop does: camera from the current shape,
    then the shape for that camera.
    """
    import eos

    size = int(crop.image.shape[0])
    uv = crop.points[:, :2].astype(np.float32)
    ids = vertex_ids[mask]
    image_points = [uv[k].reshape(2, 1) for k in np.nonzero(mask)[0]]
    shape = np.asarray(pca.get_mean(), np.float32).reshape(-1, 3)
    coeffs: List[float] = []
    affine = None
    for _ in range(max(1, iterations)):
        model_points = [np.append(shape[i], 1.0).astype(np.float32).reshape(4, 1) for i in ids]
        ortho = eos.fitting.estimate_orthographic_projection_linear(image_points, model_points, True, size)
        params = eos.fitting.RenderingParameters(ortho, size, size)
        affine = np.asarray(eos.fitting.get_3x4_affine_camera_matrix(params, size, size), np.float32)
        coeffs = eos.fitting.fit_shape_to_landmarks_linear(pca, affine, image_points, [int(i) for i in ids],
                                                          **{"lambda": lam})
        shape = np.asarray(pca.draw_sample(coeffs), np.float32).reshape(-1, 3)
    proj = np.concatenate([shape[vertex_ids], np.ones((len(vertex_ids), 1), np.float32)], 1) @ affine.T
    return shape, proj[:, :2]


# --------------------------------------------------------------------------- run

def run(args) -> int:
    from fitting.stages.coarse import CoarseSettings, fit_landmarks, initial_guess, landmark_weights
    from fitting.detections import DetectionBatch
    from fitting.stages.landmark_fit import LandmarkBasis, affine_pose, refine_pose, reprojection_residual

    progress = not args.no_progress
    face_model, closed_model, corr, data = setup_from_args(args, deformation=False)
    faces = data.detected
    mask = landmark_mask(corr)
    narrow = narrow_area(face_model)

    ls_settings = CoarseSettings(photometric=False)
    # exact points are the table's surface points: MediaPipe's yaw-dependent drift does not apply
    oracle_settings = CoarseSettings(photometric=False, landmark_offsets=False)
    oracle_weak = CoarseSettings(photometric=False, landmark_offsets=False, lambda_id=oracle_settings.lambda_id / 100,
                                 lambda_exp=oracle_settings.lambda_exp / 100,
                                 lambda_exp_l1=oracle_settings.lambda_exp_l1 / 100)
    ph_settings = CoarseSettings(photometric=True)
    initializer, context = regressor_context(args, face_model, corr)
    photometric = None
    photometric_note = None
    if args.no_photometric:
        photometric_note = "not run (--no-photometric)"
    else:
        photometric, photometric_note = _load_photometric()
    renderer = None
    if photometric is not None:
        from fitting.rendering.renderer import Renderer
        renderer = Renderer("cpu")

    rows = {k: RowStats(name) for k, name in (("mean", "mean shape (Umeyama-aligned)"),
                                              ("ls", "ours, least squares"),
                                              ("fused", "ours, LS, 3DDFA_V2 fused"),
                                              ("ph", "ours + photometric"),
                                              ("oracle", "ours, LS, exact landmarks"),
                                              ("oracle_weak", "ours, LS, exact, priors/100"),
                                              ("eos", "eos-py (identity only)"))}
    rows["ph"].note = photometric_note
    if initializer is None:
        rows["fused"].note = ("not run (--initializer none)" if args.initializer == "none" else
                              "not run (the regressor's files are not on this machine: --3ddfa-dir or FACEFIT_3DDFA_DIR)")
    if args.no_eos:
        rows["eos"].note = "not run (--no-eos)"
    if args.no_oracle:
        rows["oracle"].note = rows["oracle_weak"].note = "not run (--no-oracle)"

    lb_mean = LandmarkBasis.from_model(face_model, corr.vertex_ids, corr.bary, n_id=ls_settings.n_id)
    mean_verts = face_model.mean.cpu().numpy()
    bar = tqdm(total=len(faces), desc="coarse fits", unit="face", disable=not progress)
    for chunk in chunks(faces, max(1, args.chunk)):
        batch = DetectionBatch.stack([f.crop for f in chunk])
        b = len(chunk)
        # mean shape: best rigid pose of the mean face (the stage's own pose solve), no shape
        t0 = time.perf_counter()
        pts = lb_mean.points(torch.zeros(b, ls_settings.n_id + face_model.n_exp))
        w = landmark_weights(batch, corr, ls_settings)
        rot, t = affine_pose(pts, batch.uv, w, batch.intrinsics)
        rot, t = refine_pose(pts, batch.uv, w, batch.intrinsics, rot, t, ls_settings.pose_iterations)
        t_mean = (time.perf_counter() - t0) / b
        uv_mean = (reprojection_residual(pts, rot, t, torch.zeros_like(batch.uv), batch.intrinsics)).numpy()
        for i, f in enumerate(chunk):
            rows["mean"].add(mean_verts, f.truth, narrow, landmark_error_photo_px(uv_mean[i], f.crop, mask), t_mean)

        # ours, least squares
        t0 = time.perf_counter()
        coarse = fit_landmarks(face_model, batch, corr, ls_settings)
        t_ls = (time.perf_counter() - t0) / b
        _score_ours(rows["ls"], coarse, chunk, corr, mask, narrow, t_ls)

        # ours, least squares with the regressor's pose and points (fitting.stages.fusion), as fit-face runs it
        if initializer is not None:
            t0 = time.perf_counter()
            fused = fit_landmarks(face_model, batch, corr, ls_settings, initial_guess(context, batch))
            t_fused = (time.perf_counter() - t0) / b
            _score_ours(rows["fused"], fused, chunk, corr, mask, narrow, t_fused)

        # ours + photometric
        if photometric is not None:
            t0 = time.perf_counter()
            c0 = fit_landmarks(face_model, batch, corr, ph_settings)
            c1 = photometric(face_model, batch, corr, c0, ph_settings, renderer)
            t_ph = (time.perf_counter() - t0) / b
            _score_ours(rows["ph"], c1, chunk, corr, mask, narrow, t_ph)

        # ours, least squares on exact landmarks (landmark error against the points it was fed)
        if not args.no_oracle:
            exact = [oracle_crop(f, corr) for f in chunk]
            for key, settings in (("oracle", oracle_settings), ("oracle_weak", oracle_weak)):
                t0 = time.perf_counter()
                c2 = fit_landmarks(face_model, DetectionBatch.stack(exact), corr, settings)
                t_or = (time.perf_counter() - t0) / b
                _score_ours(rows[key], c2, chunk, corr, mask, narrow, t_or, crops=exact)
        bar.update(b)
    bar.close()

    eos_check = {}
    if not args.no_eos:
        pca = eos_pca_model(face_model, eos_check)
        vb = corr.vertex_ids.numpy()[np.arange(len(mask)), corr.bary.numpy().argmax(1)]
        for f in tqdm(faces, desc="eos fits", unit="face", disable=not progress):
            t0 = time.perf_counter()
            shape, proj = eos_fit(pca, f.crop, vb, mask, args.eos_iterations, args.eos_lambda)
            dt = time.perf_counter() - t0
            rows["eos"].add(shape, f.truth, narrow, landmark_error_photo_px(proj, f.crop, mask), dt)

    print()
    print(f"coarse bench: {data.header()}")
    print(format_table(list(rows.values())))
    base = rows["mean"].summary()["mean_mm"]
    gains = [f"{name} {100.0 * (1.0 - rows[key].summary()['mean_mm'] / base):.1f} %"
             for key, name in (("ls", "least squares"), ("fused", "fused"), ("ph", "+ photometric"),
                               ("oracle", "exact landmarks"),
                               ("oracle_weak", "exact, priors / 100"))
             if rows[key].mean_mm]
    print("mean error below the mean shape's: " + ", ".join(gains) + " (issue 4's target for least squares: 40 %)")
    print()
    print(measures_note(face_model))
    print("mean shape: the model mean, no fit; shape error after the similarity alignment, landmark error with the "
          "best rigid pose of the mean face (the coarse stage's affine + Levenberg-Marquardt pose solve).")
    print(f"ours: fit_landmarks (identity {ls_settings.n_id} modes + {face_model.n_exp} expressions, "
          f"{ls_settings.alternations} pose/shape alternations), CPU, chunks of {args.chunk}; time = chunk / faces.")
    if not args.no_oracle:
        print("exact landmarks: the same least squares (landmark_offsets=False) fed the true projections of the "
              "correspondence table's surface points on the true mesh instead of MediaPipe's points; its landmark "
              "error is against those points; 'priors / 100': lambda_id, lambda_exp and lambda_exp_l1 divided by "
              "100 (the shipped values are set for MediaPipe's noise). What a perfect detector would give: the ceiling of solver "
              "and model.")
    if not args.no_eos:
        print(f"eos-py: fit_shape_to_landmarks_linear, identity only (eos fits no ICT expressions; "
              f"the synthetic faces have 0-3 mild expressions), lambda {args.eos_lambda:g}, "
              f"{args.eos_iterations} camera/shape alternation(s), eos's scaled-orthographic camera; "
              f"the same MediaPipe points, each valid landmark's largest-barycentric vertex; "
              f"PCA basis = SVD of the ICT identity deltas (they are not orthogonal: max |cos| between "
              f"modes {eos_check.get('max_abs_cos', float('nan')):.2f}), same prior; its landmark error "
              f"is measured on those vertices; one face at a time.")
    print(f"not timed: synthetic generation {data.seconds_generate / max(1, len(data.faces)):.2f} s/face, "
          f"MediaPipe + crop {data.seconds_detect / max(1, len(data.faces)):.2f} s/face; "
          f"torch threads {torch.get_num_threads()}.")
    return 0 if faces else 1


def _load_photometric():
    """``(photometric_refine, None)``, or ``(None, why)`` when :mod:`fitting.stages.photometric` is not in this tree.

    A module found outside the ``fitting`` package being benched (an editable
    install of another checkout can supply a module this tree lacks) counts
    as not available: the bench measures one tree."""
    import importlib
    from pathlib import Path
    import fitting
    try:
        mod = importlib.import_module("fitting.stages.photometric")
    except ImportError as exc:
        return None, f"n/a (not available: {exc})"
    here = Path(fitting.__file__).resolve().parent
    where = Path(getattr(mod, "__file__", "") or "").resolve()
    if here not in where.parents:
        return None, f"n/a (not available in this tree; the import resolved to {where})"
    return mod.photometric_refine, None


def _score_ours(row: RowStats, coarse, chunk, corr, mask, narrow, seconds: float, crops=None) -> None:
    """Score a chunk's coarse fits; landmark errors against ``crops`` (default: each face's MediaPipe crop)."""
    from fitting.stages.landmark_fit import reprojection_residual
    pts = coarse.landmark_points(corr)
    cam = coarse.camera
    uv = reprojection_residual(pts, cam.rotation, cam.translation, torch.zeros_like(pts[..., :2]),
                               cam.intrinsics).detach().cpu().numpy()
    verts = coarse.vertices.detach().cpu().numpy()
    for i, f in enumerate(chunk):
        crop = f.crop if crops is None else crops[i]
        row.add(verts[i], f.truth, narrow, landmark_error_photo_px(uv[i], crop, mask), seconds)
