"""The stages in order on one chunk of faces, and the per-face results built once from what they return.

    detections -> coarse -> medium -> fine -> FitResult per face

:func:`run_stages` composes the stages (:mod:`fitting.stages`, each
``run(context, batch, previous) -> result``); :func:`assemble` turns their
batched tensors into one :class:`~fitting.result.FitResult` per face: meshes,
parameters, the photo's camera, pictures and maps.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .detections import DetectionBatch, FaceCrop, FaceJob
from .mesh import Mesh, grid_mesh
from .rendering.pictures import overlay, report_sheet, shade_geometry, shade_normals
from .result import FitResult
from .stages import load_stage
from .stages.coarse import CoarseResult, landmark_weights
from .stages.context import FitContext

# The pictures show crop pixels past the photo's edge in this grey (RGB in [0, 1]), not the
# repeated edge pixels the stages are given (and mask out).
OUTSIDE_PHOTO = np.float32(0.2)


def run_stages(context: FitContext, stages: Sequence[str], jobs: List[FaceJob], progress=None) -> List[FitResult]:
    """Run ``stages`` (names, in order) on ``jobs`` as one batch; one result per job.

    ``progress``: a :class:`fitting.progress.StageProgress` told as each stage starts and ends.
    """
    batch = DetectionBatch.stack([j.crop for j in jobs], device=context.device)
    names = [j.name for j in jobs]
    results: Dict[str, object] = {}
    timings: Dict[str, float] = {}
    previous = None
    for name in stages:
        stage = load_stage(name)
        if progress is not None:
            progress.stage(names, name)
        t = time.perf_counter()
        previous = results[name] = stage.run(context, batch, previous)
        timings[name] = (time.perf_counter() - t) / len(jobs)
        if progress is not None:
            progress.stage_done(len(jobs))
    return assemble(context, batch, jobs, results, timings)


def assemble(context: FitContext, batch: DetectionBatch, jobs: List[FaceJob], results: Dict[str, object],
             timings: Dict[str, float]) -> List[FitResult]:
    """One FitResult per face from the stages' batched results (``results``: stage name -> result)."""
    model, corr = context.model, context.correspondence
    coarse: CoarseResult = results["coarse"]
    camera = coarse.camera
    size = batch.size
    # Stages whose vertices have the model's own topology: their meshes, landmark errors and previews.
    model_meshes = {name: r.vertices for name, r in results.items() if not hasattr(r, "topology")}
    fine = results.get("fine")
    started = time.perf_counter()

    weights = landmark_weights(batch, corr, context.settings["coarse"], camera.rotation)
    shaded = {}
    for stage, verts in model_meshes.items():
        img, mask = shade_geometry(context.renderer, camera.to_camera(verts), model.triangles, camera.intrinsics,
                                   size)
        shaded[stage] = (img.cpu().numpy(), mask.cpu().numpy())
    last = list(model_meshes)[-1]
    proj = {s: camera.project(coarse.landmark_points(corr, v))[..., :2].cpu().numpy()
            for s, v in model_meshes.items()}
    # A face fitted mostly to the regressor's 68 points (MediaPipe missed it, fitting.regressor_faces, and its
    # points are stand-ins; or the fusion distrusted them) has its landmark error and overlay measured against
    # those 68 points at the model's multipie68 vertices: the points it was fitted to.
    ids68 = model.landmark_sets["multipie68"]
    proj68 = {s: camera.project(v[:, ids68])[..., :2].cpu().numpy() for s, v in model_meshes.items()} \
        if coarse.points68 is not None else None
    references = landmark_references(coarse, weights, [job.crop.mediapipe for job in jobs])
    iod_px = frontal_inter_ocular_px(camera, coarse.landmark_points(corr, coarse.vertices))
    # The identity with every expression at 0: the face to rig with the model's blendshapes
    neutral = model(coarse.id_coeffs).detach()
    photo_cameras = [_photo_camera(camera, i, job.crop) for i, job in enumerate(jobs)]
    points68 = _landmarks68(model, camera, model_meshes[last], last, [job.crop for job in jobs])
    out = []
    for i, job in enumerate(jobs):
        crop = job.crop
        r = FitResult(name=job.name, crop=crop, source=job.source, index=job.index,
                      timings={"detection": job.detection_seconds, **timings},
                      licenses={model.license_name: model.license_text} if model.license_name else {})
        valid = (weights[i] > 0).cpu().numpy()
        r.meshes["neutral"] = Mesh.from_model(model, neutral[i])
        for stage, verts in model_meshes.items():
            r.meshes[stage] = Mesh.from_model(model, verts[i])
            if references[i] == "mediapipe478":
                err = np.linalg.norm(proj[stage][i] - crop.points[:, :2], axis=1)[valid]
            else:
                err = np.linalg.norm(proj68[stage][i] - coarse.points68[i].cpu().numpy(), axis=1)
            r.params.setdefault("landmark_error_px", {})[stage] = float(err.mean() / crop.scale)
            r.params.setdefault("landmark_error_iod", {})[stage] = float(err.mean() / iod_px[i])
        r.params.update(_coarse_params(coarse, i, model, crop))
        r.params["landmark_error_reference"] = references[i]
        if "medium" in results:
            r.params["medium"] = {"max_laplacian_change_mm": float(results["medium"].max_laplacian_change[i])}
        r.camera = photo_cameras[i]
        r.landmarks68 = points68[i]
        img, mask = shaded[last]
        photo = np.where(crop.inside[..., None], crop.image, OUTSIDE_PHOTO)
        if references[i] == "mediapipe478":
            r.images["overlay"] = overlay(photo, img[i], mask[i], crop.points, proj[last][i][valid])
        else:  # the regressor's 68 points (what the face was fitted to) and the fit's, not the stand-ins
            r.images["overlay"] = overlay(photo, img[i], mask[i], coarse.points68[i].cpu().numpy(), proj68[last][i])
        panels = [photo, r.images["overlay"]] + [shaded[s][0][i] for s in model_meshes]
        titles = ["input", "overlay"] + list(model_meshes)
        if fine is not None:
            panels += _add_fine(r, fine, i)
            titles += ["fine (SfS normals)", "albedo", "shading"]
        r.images["report"] = report_sheet(panels, titles)
        out.append(r)
    for r in out:  # the per-face pictures and meshes made here, shared by the batch's faces
        r.timings["results"] = (time.perf_counter() - started) / len(out)
    return out


def frontal_inter_ocular_px(camera, points: torch.Tensor) -> np.ndarray:
    """(B,) crop pixels: the fitted face's inter-ocular distance as it would look facing the camera at its
    depth, ``f * |eye_l - eye_r| / depth`` (eye centres: the midpoints of MediaPipe's eye corners on the
    mesh, ``points`` (B, 478, 3) model frame, mm). The normaliser of ``landmark_error_iod``: the distance
    between the eyes in the photo shrinks as the head turns (to a few pixels in profile) and would inflate
    the error of a turned face; this one does not change with the head's pose."""
    from landmarks import indices as I
    right = 0.5 * (points[:, I.RIGHT_EYE_OUTER_CORNER] + points[:, I.RIGHT_EYE_INNER_CORNER])
    left = 0.5 * (points[:, I.LEFT_EYE_INNER_CORNER] + points[:, I.LEFT_EYE_OUTER_CORNER])
    depth = -camera.to_camera((0.5 * (left + right))[:, None])[:, 0, 2]
    focal = camera.intrinsics[:, 0].to(depth)  # (B, 4): fx, fy, cx, cy
    return (focal * (left - right).norm(dim=-1) / depth).cpu().numpy()


def landmark_references(coarse: CoarseResult, weights: torch.Tensor, mediapipe_found: Sequence[bool]) -> List[str]:
    """Per face, the detections its landmark error and overlay are measured against: the source that
    carried most of the coarse fit's landmark weight (:mod:`fitting.stages.fusion`).

    ``weights`` (B, K): MediaPipe's per-point weights before the fusion's trust; ``mediapipe_found`` (B,):
    False where MediaPipe missed the face and its points are stand-ins. Returns ``"mediapipe478"`` or
    ``"regressor68"`` per face. Without the regressor's points every face is ``"mediapipe478"``.
    """
    if coarse.points68 is None:
        return ["mediapipe478"] * len(mediapipe_found)
    trust = torch.ones(len(mediapipe_found)) if coarse.landmark_trust is None else coarse.landmark_trust.cpu()
    found = torch.tensor([bool(f) for f in mediapipe_found], dtype=torch.float32)
    mediapipe_share = weights.cpu().float().sum(1) * trust * found
    regressor_share = coarse.weights68.cpu().float().sum(1)
    return ["mediapipe478" if f and m >= r else "regressor68"
            for f, m, r in zip(mediapipe_found, mediapipe_share.tolist(), regressor_share.tolist())]


def _photo_camera(camera, i: int, crop: FaceCrop) -> Dict[str, np.ndarray]:
    """Face i's camera in the photo (and its working crop) as plain arrays, for params.json: the
    photo's own intrinsics (the crop's are ``Camera.crop`` of them) with the fitted pose."""
    return {"intrinsics": crop.photo_intrinsics, "rotation": camera.rotation[i].cpu().numpy(),
            "translation": camera.translation[i].cpu().numpy(),
            "crop_intrinsics": camera.intrinsics[i].cpu().numpy(), "crop_box_xy_scale": crop.box,
            "photo_size_hw": np.array(crop.photo_size)}


# What landmarks68.json says its points are.
IBUG68_ORDER = ("iBUG 300-W / Multi-PIE 68 points: 0-16 jaw (the subject's right to left), 17-26 brows, "
                "27-35 nose, 36-47 eyes, 48-67 mouth")


def _landmarks68(model, camera, verts, stage: str, crops: List[FaceCrop]) -> List[Dict[str, object]]:
    """Each face's 68 iBUG points on the fitted mesh ``verts`` (B, V, 3): the model's ``multipie68``
    vertices in mm (model and camera frame) and projected into the photo (pixels, continuous frame).
    Empty dicts for a model without that landmark set."""
    ids = model.landmark_sets.get("multipie68")
    if ids is None or len(ids) != 68:
        return [{} for _ in crops]
    pts = verts[:, ids.to(verts.device)]
    cam = camera.to_camera(pts).cpu().numpy()
    out = []
    for i, crop in enumerate(crops):
        # the face's photo camera: its crop camera uncropped (photos of a batch differ in size)
        photo = camera[i].uncrop(torch.as_tensor(crop.box)[None], *crop.photo_size)
        uvd = photo.project(pts[i:i + 1])[0].cpu().numpy()
        out.append({"order": IBUG68_ORDER, "stage": stage, "units": "mm",
                    "vertex_ids": ids.cpu().numpy(), "model_mm": pts[i].cpu().numpy(), "camera_mm": cam[i],
                    "photo_px": uvd[:, :2], "depth_mm": uvd[:, 2]})
    return out


def _add_fine(r: FitResult, fine, i: int) -> List[np.ndarray]:
    """Face i's share of the fine stage (its meshes, image-space maps, depth and metrics) into ``r``;
    returns the report's fine panels: the SfS normals shaded, the albedo, the shading."""
    s, t = fine.sfs, fine.topology
    mask = s.mask[i]
    r.meshes["fine"] = Mesh(fine.vertices[i], t.triangles, uvs=t.uvs, uv_triangles=t.uv_triangles,
                            texture=fine.textures[i].cpu().numpy())
    r.meshes["fine_grid"] = grid_mesh(fine.grid_vertices[i].cpu().numpy(), mask.cpu().numpy(),
                                      s.albedo[i].cpu().numpy())
    shading = (s.shading[i] / s.shading[i][mask].max().clamp_min(1e-6)).clamp(0, 1).cpu().numpy()
    r.images["normals"] = ((s.normals[i] + 1) / 2).cpu().numpy() * mask[..., None].cpu().numpy()
    r.images["albedo_image"] = s.albedo[i].cpu().numpy()
    r.images["shading"] = shading
    r.images["specular"] = s.specular[i, ..., 0].clamp(0, 1).cpu().numpy()
    r.images["rendered"] = s.rendered[i].clamp(0, 1).cpu().numpy()
    r.arrays["depth"] = s.depth[i].cpu().numpy().astype(np.float32)
    r.arrays["mask"] = mask.cpu().numpy()
    r.params["fine"] = fine.metrics[i]
    fine_shaded = shade_normals(s.normals[i:i + 1], s.mask[i:i + 1])[0].cpu().numpy()
    return [fine_shaded, s.albedo[i].clamp(0, 1).cpu().numpy(), shading]


def _coarse_params(coarse: CoarseResult, i: int, model, crop: Optional[FaceCrop] = None) -> dict:
    ypr = coarse.camera.euler_degrees()[i].cpu().numpy()
    out = {
        "units": "mm",
        "model": {"name": model.name, "source": model.source, "region": model.label_names},
        "pose_deg": {"yaw": float(ypr[0]), "pitch": float(ypr[1]), "roll": float(ypr[2])},
        "id_coeffs": coarse.id_coeffs[i].cpu().numpy(),
        "exp_coeffs": {n: float(v) for n, v in zip(model.exp_names, coarse.exp_coeffs[i].cpu().numpy())},
    }
    if coarse.light is not None:
        out["sh_light"] = coarse.light[i].cpu().numpy()
    # which landmark sources the fit used (fitting.stages.fusion): MediaPipe's weight in [0, 1], and
    # whether the regressor's 68 points joined them
    trust = 1.0 if coarse.landmark_trust is None else float(coarse.landmark_trust[i])
    # and whether MediaPipe found the face at all (False: the regressor read it alone, fitting.regressor_faces)
    found = bool(crop.mediapipe) if crop is not None else True
    out["landmark_sources"] = {"mediapipe_found": found, "mediapipe_trust": trust if found else 0.0,
                               "regressor68": coarse.points68 is not None}
    return out
