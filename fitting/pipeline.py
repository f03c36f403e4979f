"""The stages in order, on one chunk of faces: detections -> coarse -> medium -> fine -> results.

Each stage takes and returns a small dataclass on (B, ...) tensors; this
module moves data between them and turns tensors into per-face results.
"""
from __future__ import annotations

import time
from typing import List

import numpy as np
import torch

from sfs.projection import camera_to_pixel

from .coarse import CoarseInit, CoarseResult, fit_landmarks, landmark_weights
from .correspondence import triangle_barycentrics, triangle_ids
from .detections import DetectionBatch
from .mesh import Mesh
from .report import overlay, report_sheet, shade_geometry

# The pictures show crop pixels past the photo's edge in this grey (RGB in [0, 1]), not the
# repeated edge pixels the stages are given (and mask out).
OUTSIDE_PHOTO = np.float32(0.2)


def run_stages(fitter, chunk: List, progress=None) -> None:
    """Fill ``chunk`` (FitResults with crops) in place with every requested stage's output.

    ``progress``: a :class:`fitting.progress.StageProgress` told as each stage starts and ends.
    """
    model, dev = fitter.model, fitter.device
    batch = DetectionBatch.stack([r.crop for r in chunk], device=dev)
    size = batch.size
    names = [r.name for r in chunk]
    timings = {}

    def timed(stage, run):
        if progress is not None:
            progress.stage(names, stage)
        t = time.perf_counter()
        out = run()
        timings[stage] = (time.perf_counter() - t) / len(chunk)
        if progress is not None:
            progress.stage_done(len(chunk))
        return out

    def coarse_stage():
        coarse = fit_landmarks(model, batch, fitter.corr, fitter.coarse_settings, _initialise(fitter, batch))
        if fitter.coarse_settings.photometric:
            from .photometric import photometric_refine
            coarse = photometric_refine(model, batch, fitter.corr, coarse, fitter.coarse_settings, fitter.renderer)
        return coarse

    coarse = timed("coarse", coarse_stage)
    weights = landmark_weights(batch, fitter.corr, fitter.coarse_settings, coarse.rotation)
    stage_verts = {"coarse": coarse.vertices}

    if "medium" in fitter.stages:
        stage_verts["medium"] = timed("medium", lambda: run_medium_stage(fitter, batch, coarse))

    fine = None
    if "fine" in fitter.stages:
        from .fine import run_fine_stage
        fine = timed("fine", lambda: run_fine_stage(fitter, batch, coarse, stage_verts["medium"]))

    # ---- per-face results
    results_started = time.perf_counter()
    shaded = {}
    for stage, verts in stage_verts.items():
        img, mask = shade_geometry(fitter.renderer, camera_frame(coarse, verts), model.triangles,
                                   coarse.intrinsics, size)
        shaded[stage] = (img.cpu().numpy(), mask.cpu().numpy())
    last = list(stage_verts)[-1]
    proj = {s: _project_landmarks(coarse, v, fitter.corr) for s, v in stage_verts.items()}
    # The identity with every expression at 0: the face to rig with the model's blendshapes
    neutral = model(coarse.id_coeffs).detach()
    for i, r in enumerate(chunk):
        crop = r.crop
        valid = (weights[i] > 0).cpu().numpy()
        r.meshes["neutral"] = Mesh.from_model(model, neutral[i])
        for stage, verts in stage_verts.items():
            r.meshes[stage] = Mesh.from_model(model, verts[i])
            err = np.linalg.norm(proj[stage][i] - crop.points[:, :2], axis=1)[valid]
            r.params.setdefault("landmark_error_px", {})[stage] = float(err.mean() / crop.scale)
            r.params.setdefault("landmark_error_iod", {})[stage] = float(err.mean() / crop.scale /
                                                                          crop.landmarks.inter_ocular)
        r.params.update(_coarse_params(coarse, i, model))
        r.camera = {"intrinsics": crop.photo_intrinsics, "rotation": coarse.rotation[i].cpu().numpy(),
                    "translation": coarse.translation[i].cpu().numpy(),
                    "crop_intrinsics": coarse.intrinsics[i].cpu().numpy(),
                    "crop_box_xy_scale": np.array([crop.x0, crop.y0, crop.scale]),
                    "photo_size_hw": np.array(crop.photo_size)}
        img, mask = shaded[last]
        photo = np.where(crop.inside[..., None], crop.image, OUTSIDE_PHOTO)
        r.images["overlay"] = overlay(photo, img[i], mask[i], crop.points, proj[last][i][valid])
        r.timings.update(timings)  # beside the photo's detection time (fitting.api)
        if fine is not None:
            fine.fill_result(r, i)
        panels = [photo, r.images["overlay"]] + [shaded[s][0][i] for s in stage_verts]
        titles = ["input", "overlay"] + list(stage_verts)
        if fine is not None:
            p, t = fine.report_panels(i)
            panels += p
            titles += t
        r.images["report"] = report_sheet(panels, titles)
    for r in chunk:
        r.timings["results"] = (time.perf_counter() - results_started) / len(chunk)


def camera_frame(coarse: CoarseResult, verts: torch.Tensor) -> torch.Tensor:
    return coarse.to_camera(verts)


def model_frame(coarse: CoarseResult, verts_cam: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bji,bvj->bvi", coarse.rotation, verts_cam - coarse.translation[:, None])


def run_medium_stage(fitter, batch: DetectionBatch, coarse: CoarseResult) -> torch.Tensor:
    """Medium stage (eq. 2-3) on the coarse meshes; returns (B, V, 3) model-frame vertices."""
    from .medium import index_map_correspondence, medium_fixed_vertices, run_medium
    model, settings = fitter.model, fitter.medium_settings
    tris = model.triangles
    w = torch.as_tensor(settings.landmark_weights()).to(batch.uv) * fitter.corr.valid.to(batch.uv)
    verts_cam = camera_frame(coarse, coarse.vertices)
    uv = coarse.surface_uv(fitter.corr, batch.uv)  # MediaPipe's pose-dependent offsets taken out
    if settings.correspondence == "index_map":
        frags = fitter.renderer.rasterize(verts_cam, tris, coarse.intrinsics, batch.size, batch.size)
        tri, bary, ok = index_map_correspondence(frags.tri_id, frags.bary, uv)
        w = w[None] * ok.to(w)
    else:
        tri = triangle_ids(fitter.corr, tris)
        bary = triangle_barycentrics(fitter.corr, tris, tri)
    res = run_medium(verts_cam, tris, coarse.intrinsics, uv, tri, bary, landmark_weights=w,
                     settings=settings, fixed_vertices=medium_fixed_vertices(model, settings))
    return model_frame(coarse, res.vertices_cam.to(verts_cam))


def _project_landmarks(coarse: CoarseResult, verts: torch.Tensor, corr) -> np.ndarray:
    """(B, K, 2) crop pixels where (B, V, 3) model-frame vertices put MediaPipe's points (surface points
    plus the coarse fit's pose-dependent offsets)."""
    pts = coarse.landmark_points(corr, verts)
    return camera_to_pixel(camera_frame(coarse, pts), coarse.intrinsics)[..., :2].cpu().numpy()


def _coarse_params(coarse: CoarseResult, i: int, model) -> dict:
    ypr = coarse.euler_degrees()[i].cpu().numpy()
    out = {
        "units": "mm",
        "model": {"name": "ICT Face Model Light", "source": model.source, "region": model.label_names},
        "pose_deg": {"yaw": float(ypr[0]), "pitch": float(ypr[1]), "roll": float(ypr[2])},
        "id_coeffs": coarse.id_coeffs[i].cpu().numpy(),
        "exp_coeffs": {n: float(v) for n, v in zip(model.exp_names, coarse.exp_coeffs[i].cpu().numpy())},
    }
    if coarse.light is not None:
        out["sh_light"] = coarse.light[i].cpu().numpy()
    return out


_INIT_DIMS = {"id_coeffs": 1, "exp_coeffs": 1, "rotation": 2, "translation": 1, "albedo": 2}


def _initialise(fitter, batch: DetectionBatch):
    """Run the initialiser on each face and stack what it returned (a field counts only if every face has it)."""
    if fitter.initializer is None:
        return None
    inits = [fitter.initializer(batch.images[i], torch.cat([batch.uv[i], batch.rel_depth[i, :, None]], 1),
                                fitter.model) for i in range(len(batch))]
    fields = {}
    for name, dims in _INIT_DIMS.items():
        vals = [getattr(x, name) for x in inits]
        if any(v is None for v in vals):
            continue
        vals = [torch.as_tensor(v) for v in vals]
        fields[name] = torch.stack([v[0] if v.dim() == dims + 1 else v for v in vals]).to(fitter.device)
    return CoarseInit(**fields)
