"""Fine-stage bench: does shape from shading recover fine detail? Medium vs fine normals, depth and albedo on synthetic faces.

    python -m fitting.bench fine --n 20 --seed 0 [--model-dir DIR] [--size 512]

The synthetic faces carry fine geometric detail (forehead lines, crow's feet,
nasolabial folds and fine noise, ``FaceGenerator(detail=True)``) that is
absent from their albedo: only shading shows it. No out-of-model
deformation. Each face goes through MediaPipe and the crop as the API does,
then our stages:

- coarse: :func:`fitting.stages.coarse.fit_landmarks` with
  ``CoarseSettings(photometric=False)`` (least squares only, to keep time down);
- medium: :func:`fitting.stages.medium.run`, default ``MediumSettings``;
- fine: :func:`fitting.stages.fine.run` (the stage itself, outputs
  included) on the medium mesh, default ``FineSettings``, twice: with
  the default ``SfsSettings`` (RTV + skin colour, eq. 6) and with
  ``lambda_rtv=0`` (the skin-colour term alone).

Ground truth: the synthetic normal (camera frame), depth and albedo maps,
resampled into the crop with the crop's own warp
(:func:`fitting.bench.common.crop_maps`). All measures are per face over the
same pixels: the mask the fine stage used (``SfsResult.mask``: SfS regions
of the landmark mesh, render coverage, eroded) intersected with the pixels
that lie fully inside the true face mask; then averaged over faces.

- normals: mean angle (degrees) between predicted and true normals. Medium
  (and coarse): ``sfs.normals.depth_to_normals`` of the rendered mesh depth,
  i.e. the normals of the depth ``d0`` the fine stage starts from, computed
  the same way as the fine normals; the normals interpolated from the mesh's
  vertex normals are printed below the table for comparison. Fine: the
  ``SfsResult.normals`` (of the refined depth, at the crop resolution).
- depth: mean |d - d_true| (mm) after removing each face's median of
  ``d - d_true`` over the mask (the fitted camera distance is not part of it).
- albedo: mean absolute error per channel ([0, 1]) of the fine albedo.
  "final": the albedo the stage returns (after the closed-form last pass at
  the crop resolution, ``SfsSettings.final_albedo_prior``); "eq. 6": the
  optimised albedo before that pass. The fine stage is run with
  ``final_albedo_prior=None`` (which changes nothing else: the pass comes
  after depth and normals are final) and the last pass is recomputed here;
  on the first face it is checked against ``refine_depth``'s own last pass.
- time: each stage's wall time per face (chunks of ``--chunk`` faces);
  medium comes on top of coarse, fine on top of medium.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import add_common_arguments, chunks, setup_from_args

TARGET_REDUCTION = 15.0  # %, fine normal error vs medium (issue 16)
DETAIL_SIGMA_PX = 4.0  # crop px: the Gaussian that separates "detail" from the smooth shape in the truth's normals
ORACLE_BLUR_PX = 3.0  # crop px: --oracle-depth's base depth is the true depth blurred by this Gaussian


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.set_defaults(n=20)
    p.add_argument("--oracle-depth", action="store_true",
                   help="also run the fine stage's SfS from the TRUE smooth depth (the synthetic depth blurred by "
                        f"a {ORACLE_BLUR_PX:g} px Gaussian) instead of the medium mesh's: what shape from shading "
                        "itself recovers when the base shape is right (two more rows; one more SfS run per face)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check of the recomputed last albedo pass against refine_depth's (one extra "
                        "fine run on the first face)")


# --------------------------------------------------------------------------- measures

def angular_error_deg(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean angle (degrees) between (H, W, 3) unit normal maps over ``mask``."""
    p = pred[mask].astype(np.float64)
    t = truth[mask].astype(np.float64)
    p /= np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return float(np.degrees(np.arccos(np.clip((p * t).sum(1), -1.0, 1.0))).mean())


def _masked_gaussian(a: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W[, C]) float32 Gaussian blur over the (H, W) ``mask`` only (normalised by the blurred mask)."""
    import cv2
    m = mask.astype(np.float32)
    mc = m[..., None] if a.ndim == 3 else m
    num = cv2.GaussianBlur(a.astype(np.float32) * mc, (0, 0), sigma)
    den = np.maximum(cv2.GaussianBlur(m, (0, 0), sigma), 1e-6)
    return num / (den[..., None] if a.ndim == 3 else den)


def smooth_normals(normals: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) unit normals Gaussian-blurred over ``mask`` (normalised by the blurred mask), renormalised."""
    out = _masked_gaussian(normals, mask, sigma)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def depth_error_mm(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean |pred - truth| (mm) over ``mask`` after removing the median offset."""
    diff = pred[mask].astype(np.float64) - truth[mask].astype(np.float64)
    return float(np.abs(diff - np.median(diff)).mean())


def albedo_error(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error per channel ([0, 1]) over ``mask``."""
    return float(np.abs(pred[mask].astype(np.float64) - truth[mask].astype(np.float64)).mean())


def albedo_error_gain(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """As :func:`albedo_error` after the best per-channel gain (least squares) on ``pred``:
    light and albedo are only known up to a colour scale, this leaves that out."""
    p, t = pred[mask].astype(np.float64), truth[mask].astype(np.float64)
    g = (p * t).sum(0) / np.maximum((p * p).sum(0), 1e-12)
    return float(np.abs(p * g - t).mean())


def blurred_depth(depth: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) depth Gaussian-blurred over ``mask`` (normalised by the blurred mask); the input outside."""
    return np.where(mask, _masked_gaussian(depth, mask, sigma), depth).astype(np.float32)


def last_albedo_pass(image: torch.Tensor, albedo: torch.Tensor, shading: torch.Tensor, specular: torch.Tensor,
                     mask: torch.Tensor, settings) -> torch.Tensor:
    """The closed-form last albedo pass of :func:`sfs.refine.refine_depth` (``final_albedo_prior``), applied
    to a result computed with ``final_albedo_prior=None``; the run checks it against refine_depth's own."""
    lam = float(settings.final_albedo_prior)
    target = image.clamp(0.0, 1.0) - settings.eps_specular * specular
    refit = ((target * shading + lam * albedo) / (shading ** 2 + lam)).clamp(0.0, 1.0)
    return torch.where(mask[..., None], refit, albedo)


# --------------------------------------------------------------------------- rows

VARIANTS = (("rtv", "fine (RTV + skin colour)", {}),
            ("skin", "fine (skin colour only)", {"lambda_rtv": 0.0}))


class Row:
    """Per-face measurements of one row; summarised as means over faces."""

    KEYS = ("normal_deg", "detail_deg", "normal_smooth_deg", "normal_vn_deg", "depth_mm", "albedo_final", "albedo_eq6", "albedo_gain_final",
            "albedo_gain_eq6", "seconds")

    def __init__(self, name: str):
        self.name = name
        self.values: Dict[str, List[float]] = {k: [] for k in self.KEYS}

    def add(self, **kw) -> None:
        for k, v in kw.items():
            self.values[k].append(float(v))

    def mean(self, key: str) -> float:
        xs = self.values[key]
        return float(np.mean(xs)) if xs else math.nan

    def count(self) -> int:
        return len(self.values["normal_deg"])


COLUMNS = [("normals deg", "normal_deg", "{:.2f}"), ("depth mm", "depth_mm", "{:.3f}"),
           ("albedo final", "albedo_final", "{:.4f}"), ("albedo eq.6", "albedo_eq6", "{:.4f}"),
           ("s / face", "seconds", "{:.2f}")]


def format_table(rows: List[Row]) -> str:
    name_w = max(len("method"), *(len(r.name) for r in rows)) + 2
    heads = [h for h, _, _ in COLUMNS] + ["faces"]
    widths = [max(len(h), 8) + 2 for h in heads]
    lines = ["method".ljust(name_w) + "".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            v = r.mean(key)
            cells.append("n/a" if math.isnan(v) else fmt.format(v))
        cells.append(str(r.count()))
        lines.append(r.name.ljust(name_w) + "".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def relative(new: float, old: float) -> float:
    """Relative reduction in % (positive: ``new`` is lower)."""
    return 100.0 * (old - new) / old if old else math.nan


# --------------------------------------------------------------------------- run

def _mesh_geometry(renderer, verts_cam: torch.Tensor, tris: torch.Tensor, k: torch.Tensor, size: int):
    """Rendered depth (B, S, S), its depth_to_normals, interpolated vertex normals and coverage."""
    from morphable.geometry import vertex_normals
    from sfs.normals import depth_to_normals
    with torch.no_grad():
        frags = renderer.rasterize(verts_cam, tris, k, size, size)
        depth = frags.depth
        n_depth = depth_to_normals(depth, k, frags.mask)
        vn = vertex_normals(verts_cam, tris)
        n_vert = torch.nn.functional.normalize(renderer.interpolate(vn, frags), dim=-1)
    return depth, n_depth, n_vert, frags.mask


def _oracle_rows(rows, face, batch, i, medium_geo, k, base, reference, mask) -> None:
    """--oracle-depth: the fine stage's SfS from the true smooth depth, over the fine stage's own mask
    restricted to the pixels inside the true face (``mask``: where the oracle depth is defined)."""
    from fitting.stages.fine import fixed_depth_pixels, sfs_mask_and_labels
    from sfs.normals import depth_to_normals
    from sfs.refine import refine_depth
    gt = face.maps
    d0 = torch.from_numpy(blurred_depth(gt["depth"], gt["inside"], ORACLE_BLUR_PX))[None]
    m_t = torch.from_numpy(mask)[None]
    _, labels = sfs_mask_and_labels(batch.region_labels[i:i + 1], medium_geo[3][i:i + 1], base.mask_erode_px)
    labels = torch.where(m_t, labels, torch.full_like(labels, -1))
    t0 = time.perf_counter()
    r = refine_depth(batch.images[i:i + 1], d0, m_t, k[i:i + 1], region_labels=labels, settings=reference,
                     fixed_depth=fixed_depth_pixels(batch.images[i:i + 1], m_t, labels, base))
    seconds = time.perf_counter() - t0
    n0 = depth_to_normals(d0, k[i:i + 1], m_t)[0].numpy()
    rows["oracle_d0"].add(normal_deg=angular_error_deg(n0, gt["normals"], mask),
                          depth_mm=depth_error_mm(d0[0].numpy(), gt["depth"], mask), seconds=0.0)
    rows["oracle_fine"].add(normal_deg=angular_error_deg(r.normals[0].numpy(), gt["normals"], mask),
                            depth_mm=depth_error_mm(r.depth[0].numpy(), gt["depth"], mask),
                            albedo_final=albedo_error(r.albedo[0].numpy(), gt["albedo"], mask), seconds=seconds)


def run(args) -> int:
    from fitting.stages.coarse import CoarseSettings, fit_landmarks
    from fitting.detections import DetectionBatch
    from fitting.rendering.renderer import Renderer
    from fitting.stages import fine as fine_stage
    from fitting.stages import medium as medium_stage
    from fitting.stages.context import FitContext
    from fitting.stages.fine import (FineSettings, albedo_regions, fixed_depth_pixels, sfs_mask_and_labels,
                                     shape_mode_depths)
    from fitting.stages.medium import MediumSettings
    from sfs.refine import refine_depth

    progress = not args.no_progress
    face_model, closed_model, corr, data = setup_from_args(args, deformation=False, detail=True, keep_maps=True)
    faces = data.detected
    coarse_settings = CoarseSettings(photometric=False)
    base = FineSettings()
    reference = base.sfs  # the settings the pipeline runs with (final albedo pass on)
    if reference.final_albedo_prior is None:
        raise RuntimeError("SfsSettings().final_albedo_prior is None: the bench expects the last pass on")
    variants = [(key, name, dataclasses.replace(reference, final_albedo_prior=None, **change))
                for key, name, change in VARIANTS]
    renderer = Renderer("cpu")
    context = FitContext(model=face_model, correspondence=corr, renderer=renderer, device=face_model.device,
                         settings={"medium": MediumSettings(), "fine": base})
    tris = face_model.triangles

    rows = {"coarse": Row("coarse (least squares)"), "medium": Row("medium (Laplacian)")}
    rows.update({key: Row(name) for key, name, _ in variants})
    if args.oracle_depth:
        rows["oracle_d0"] = Row(f"oracle d0 (true depth, blur {ORACLE_BLUR_PX:g} px)")
        rows["oracle_fine"] = Row("fine (RTV) from oracle d0")
    check: Optional[dict] = None
    mask_px: List[int] = []
    bar = tqdm(total=len(faces), desc="coarse + medium + fine x2", unit="face", disable=not progress)
    for chunk in chunks(faces, max(1, args.chunk)):
        batch = DetectionBatch.stack([f.crop for f in chunk])
        b, size = len(chunk), batch.size
        t0 = time.perf_counter()
        coarse = fit_landmarks(face_model, batch, corr, coarse_settings)
        t1 = time.perf_counter()
        medium = medium_stage.run(context, batch, coarse)
        t2 = time.perf_counter()
        cam = coarse.camera
        k = cam.intrinsics
        geo = {"coarse": _mesh_geometry(renderer, cam.to_camera(coarse.vertices), tris, k, size),
               "medium": _mesh_geometry(renderer, cam.to_camera(medium.vertices), tris, k, size)}
        times = {"coarse": (t1 - t0) / b, "medium": (t2 - t1) / b}
        fine = {}
        for key, _, sfs_settings in variants:
            variant = dataclasses.replace(context, settings={**context.settings,
                                                             "fine": dataclasses.replace(base, sfs=sfs_settings)})
            t3 = time.perf_counter()
            out = fine_stage.run(variant, batch, medium)
            times[key] = (time.perf_counter() - t3) / b
            s = out.sfs
            final = last_albedo_pass(batch.images, s.albedo, s.shading, s.specular, s.mask,
                                     dataclasses.replace(sfs_settings, final_albedo_prior=reference.final_albedo_prior))
            fine[key] = (s, final)
        if check is None and not args.no_check:
            # refine_depth with the pipeline's own settings and inputs (the albedo regions, the fixed pixels,
            # the shape modes' depth maps) on the first face: same normals, and its last albedo pass equal to
            # the one recomputed here
            d0 = geo["medium"][0][:1]
            m, labels = sfs_mask_and_labels(batch.region_labels[:1], geo["medium"][3][:1], base.mask_erode_px)
            verts_cam = cam.to_camera(medium.vertices)
            with torch.no_grad():
                frags = renderer.rasterize(verts_cam, tris, k, size, size)
            basis = shape_mode_depths(renderer, face_model, cam, verts_cam, frags, base)
            ref = refine_depth(batch.images[:1], d0, m, k[:1], region_labels=albedo_regions(labels, base),
                               settings=reference, fixed_depth=fixed_depth_pixels(batch.images[:1], m, labels, base),
                               depth_basis=None if basis is None else basis[:1])
            s, final = fine["rtv"]
            mm = ref.mask[0]
            check = {"albedo": float((ref.albedo[0] - final[0])[mm].abs().max()),
                     "normals": float((ref.normals[0] - s.normals[0])[mm].abs().max()),
                     "mask_equal": bool(torch.equal(ref.mask[0], s.mask[0]))}
        for i, f in enumerate(chunk):
            gt = f.maps
            mask = gt["inside"] & np.logical_and.reduce([fine[key][0].mask[i].cpu().numpy() for key in fine])
            mask_px.append(int(mask.sum()))
            if not mask.any():
                continue
            if args.oracle_depth:
                _oracle_rows(rows, f, batch, i, geo["medium"], k, base, reference, mask)
            smooth = smooth_normals(gt["normals"], gt["inside"], DETAIL_SIGMA_PX)
            rows["medium"].add(detail_deg=angular_error_deg(smooth, gt["normals"], mask))
            for key in ("coarse", "medium"):
                depth, n_depth, n_vert, _ = geo[key]
                rows[key].add(normal_deg=angular_error_deg(n_depth[i].numpy(), gt["normals"], mask),
                              normal_smooth_deg=angular_error_deg(n_depth[i].numpy(), smooth, mask),
                              normal_vn_deg=angular_error_deg(n_vert[i].numpy(), gt["normals"], mask),
                              depth_mm=depth_error_mm(depth[i].numpy(), gt["depth"], mask), seconds=times[key])
            for key, (s, final) in fine.items():
                a_eq6, a_fin = s.albedo[i].cpu().numpy(), final[i].cpu().numpy()
                rows[key].add(normal_deg=angular_error_deg(s.normals[i].cpu().numpy(), gt["normals"], mask),
                              depth_mm=depth_error_mm(s.depth[i].cpu().numpy(), gt["depth"], mask),
                              albedo_final=albedo_error(a_fin, gt["albedo"], mask),
                              albedo_eq6=albedo_error(a_eq6, gt["albedo"], mask),
                              albedo_gain_final=albedo_error_gain(a_fin, gt["albedo"], mask),
                              albedo_gain_eq6=albedo_error_gain(a_eq6, gt["albedo"], mask),
                              seconds=times[key])
        bar.update(b)
    bar.close()

    med = rows["medium"]
    print()
    print(f"fine bench: {data.header()}")
    print(format_table(list(rows.values())))
    parts = []
    for key, name, _ in variants:
        r = relative(rows[key].mean("normal_deg"), med.mean("normal_deg"))
        parts.append(f"{name} {r:+.1f} % ({'meets' if r >= TARGET_REDUCTION else 'misses'} the "
                     f"{TARGET_REDUCTION:g} % target)")
    print("normal-error reduction vs medium: " + "; ".join(parts))
    parts = [f"{rows[key].name} {relative(rows[key].mean('depth_mm'), med.mean('depth_mm')):+.1f} %"
             for key, _, _ in variants]
    print("depth-error reduction vs medium: " + "; ".join(parts))
    if args.oracle_depth:
        r = relative(rows["oracle_fine"].mean("normal_deg"), rows["oracle_d0"].mean("normal_deg"))
        print(f"from the oracle d0 (true depth blurred by {ORACLE_BLUR_PX:g} px; same pixels): normal error "
              f"{r:+.1f} % (positive: SfS lowered it)")
    rtv, skin = rows["rtv"].mean("normal_deg"), rows["skin"].mean("normal_deg")
    per_face = np.array(rows["rtv"].values["normal_deg"]) - np.array(rows["skin"].values["normal_deg"])
    if per_face.size:
        print(f"RTV vs skin colour only: normal error {rtv - skin:+.3f} deg (RTV {'lower' if rtv < skin else 'not lower'}"
              f"; lower on {int((per_face < 0).sum())}/{per_face.size} faces)")
    print()
    print("Measures per face over the fine stage's mask intersected with the pixels fully inside the true face mask "
          f"(mean {np.mean(mask_px) if mask_px else 0:.0f} px of the {args.crop_size} px crop), then the mean over "
          "faces. normals: mean angle to the true camera-frame normals; coarse/medium rows: depth_to_normals of the "
          "rendered mesh depth (the fine stage's d0), fine rows: the fine stage's normals. depth: mean |d - d_true| "
          "after removing each face's median offset. albedo: mean |error| per channel in [0, 1]; 'final' = the "
          "stage's output (closed-form last pass, final_albedo_prior="
          f"{reference.final_albedo_prior:g}), 'eq.6' = the optimised albedo before it.")
    print(f"size of the true fine detail: mean angle between the true normals and the same blurred with a "
          f"{DETAIL_SIGMA_PX:g} px Gaussian {med.mean('detail_deg'):.2f} deg; medium's normal error against that "
          f"blurred truth {med.mean('normal_smooth_deg'):.2f} deg (most of medium's error is smooth shape, not "
          f"missing detail, when this is close to its error in the table).")
    print(f"medium normals from interpolated vertex normals instead: {med.mean('normal_vn_deg'):.2f} deg "
          f"(coarse {rows['coarse'].mean('normal_vn_deg'):.2f} deg).")
    print("albedo after the best per-channel gain (light/albedo colour-scale ambiguity left out): "
          + "; ".join(f"{rows[key].name} final {rows[key].mean('albedo_gain_final'):.4f}, eq.6 "
                      f"{rows[key].mean('albedo_gain_eq6'):.4f}" for key, _, _ in variants))
    if check is not None:
        print(f"check on face #{faces[0].index}: refine_depth with the default SfsSettings vs this run: max |albedo "
              f"diff| {check['albedo']:.2e} (recomputed last pass), max |normal diff| {check['normals']:.2e}, "
              f"same mask: {check['mask_equal']}.")
    ws = reference.working_size
    print(f"coarse: fit_landmarks, CoarseSettings(photometric=False) (no photometric polish, to keep time down); "
          f"medium: stages.medium.run, default MediumSettings; fine: stages.fine.run (outputs included: grid mesh, "
          f"displaced mesh, UV albedo at {base.texture_height} px), SfsSettings defaults (working_size {ws}, "
          f"lambda_region {reference.lambda_region:g}, lambda_rtv {reference.lambda_rtv:g}; the skin-colour-only "
          f"row lambda_rtv=0). CPU, chunks of {args.chunk}; time = each stage's own chunk time / faces (medium on "
          f"top of coarse, each fine row on top of medium).")
    print(f"not timed: synthetic generation {data.seconds_generate / max(1, len(data.faces)):.2f} s/face, "
          f"MediaPipe + crop {data.seconds_detect / max(1, len(data.faces)):.2f} s/face; "
          f"torch threads {torch.get_num_threads()}.")
    return 0 if rows["rtv"].count() else 1
