"""How much shape MediaPipe's residual after the coarse fit carries: the measurement behind MediumSettings.

    PYTHONPATH=. python tools/medium_residual_info.py [--n 40] [--seed 7]

On synthetic faces of known truth (out-of-model deformation on, not the benches' seed 0), after the coarse
fit (least squares, as ``bench medium``), per landmark group:

- residual: what the medium stage sees, MediaPipe's point (offsets taken out, ``CoarseResult.surface_uv``)
  minus the projection of the coarse surface point, crop px;
- true offset: the true surface point's projection minus the coarse one; from both a per-face 2D affine
  is taken out (what a pose or similarity change explains, which the medium stage is not for);
- corr, and the Wiener gain b = cov(residual, true) / var(residual): the share of the residual a
  linear minimum-variance estimate moves a landmark by;
- detector noise: MediaPipe's point minus the true one (per-face shift removed), px per axis;
- sigma_L: maximum-likelihood RMS Laplacian coordinate per axis of the coarse error (aligned truth minus
  coarse), for a prior of precision L^T L / sigma_L^2 (MediumSettings.laplacian_prior_mm).
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch


def umeyama(src: np.ndarray, dst: np.ndarray):
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    r = u @ d @ vt
    scale = (s * np.diag(d)).sum() / (a ** 2).sum()
    return scale, r, md - scale * r @ ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model-dir", default=None)
    args = p.parse_args()

    from fitting.bench.common import load_models, make_synthetic_set, oracle_crop
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import CoarseSettings, fit_landmarks
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.laplacian import uniform_laplacian
    from landmarks.indices import GROUP_NAMES, point_groups

    face_model, closed_model = load_models(args.model_dir)
    corr = load_correspondence()
    data = make_synthetic_set(face_model, closed_model, args.n, args.seed, deformation=True, progress=False)
    groups = np.asarray(point_groups())
    use = corr.valid.cpu().numpy().astype(bool) & (groups != GROUP_NAMES.index("iris"))
    lap = uniform_laplacian(face_model.triangles.cpu().numpy(), face_model.n_vertices)
    res, true, det, errors = [], [], [], []
    for f in data.detected:
        batch = DetectionBatch.stack([f.crop])
        coarse = fit_landmarks(face_model, batch, corr, CoarseSettings(photometric=False))
        cam = coarse.camera
        surface = coarse.surface_uv(corr, batch.uv)[0].double().numpy()
        exact = oracle_crop(f, corr).points[:, :2].astype(np.float64)
        proj = cam.project(corr.points(coarse.vertices))[0, :, :2].double().numpy()
        design, full = np.c_[exact[use], np.ones(use.sum())], np.c_[exact, np.ones(len(exact))]
        t, r = exact - proj, surface - proj
        t = t - full @ np.linalg.lstsq(design, t[use], rcond=None)[0]
        r = r - full @ np.linalg.lstsq(design, r[use], rcond=None)[0]
        e = surface - exact
        res.append(r)
        true.append(t)
        det.append(e - e[use].mean(0))
        verts = cam.to_camera(coarse.vertices).double()[0].cpu().numpy()
        s, r, tr = umeyama(f.truth_camera, verts)
        errors.append((s * f.truth_camera @ r.T + tr) - verts)
    res, true, det = np.array(res), np.array(true), np.array(det)
    print(f"{len(data.detected)} synthetic faces (seed {args.seed}, deformation on); crop px")
    print(f"{'group':10s}{'corr':>8s}{'Wiener b':>10s}{'residual':>10s}{'true':>8s}{'detector/axis':>15s}")
    for g, name in enumerate(GROUP_NAMES):
        m = use & (groups == g)
        if not m.any():
            continue
        r, t = res[:, m], true[:, m]
        corr_g = np.corrcoef(r.ravel(), t.ravel())[0, 1]
        b = (r * t).sum() / (r * r).sum()
        print(f"{name:10s}{corr_g:+8.2f}{b:+10.3f}{np.sqrt((r ** 2).sum(-1).mean()):10.2f}"
              f"{np.sqrt((t ** 2).sum(-1).mean()):8.2f}{np.sqrt((det[:, m] ** 2).mean()):15.2f}")

    ltl = (lap.T @ lap).tocsc()
    eye = sp.identity(lap.shape[0], format="csc")
    ld2 = np.mean([((lap @ d) ** 2).sum() for d in errors])
    d2 = np.mean([(d ** 2).sum() for d in errors])

    def nll(x):
        a, b = np.exp(x)
        lu = spla.splu((a * ltl + b * eye).tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options=dict(SymmetricMode=True))
        return -(1.5 * np.log(np.abs(lu.U.diagonal())).sum() - 0.5 * (a * ld2 + b * d2))

    fit = so.minimize(nll, [np.log(1 / 0.05 ** 2), np.log(1.0)], method="Nelder-Mead",
                      options=dict(xatol=1e-3, fatol=1e-2, maxiter=300))
    print(f"coarse error: RMS per axis {np.sqrt(d2 / lap.shape[0] / 3):.3f} mm; ML sigma_L "
          f"{1 / np.sqrt(np.exp(fit.x[0])):.4f} mm")


if __name__ == "__main__":
    with torch.no_grad():
        main()
