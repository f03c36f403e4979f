"""Coarse stage, part 2: photometric polish by Adam through the differentiable renderer.

Optimises, per face, a small pose correction, the identity and expression
coefficients, the 9x3 SH light and one skin colour so that the rendered
face (``albedo * SH(normal)``, METHOD.md eq. 4-5 without specular) matches the
photo inside the skin regions, while the landmark term of the least-squares
fit is kept (in normalised pixels, see :mod:`fitting.stages.landmark_fit`) and the
coefficients stay near their priors.

Images are compared at ``settings.photometric_size`` (the crop resampled) to
keep the CPU cost down. Not differentiated: visibility and silhouettes (the
CPU renderer's limitation), so the silhouette does not pull the shape.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from landmarks import in_regions
from morphable import MorphableModel
from morphable.geometry import vertex_normals
from sfs.adam import Adam, cosine_annealed
from sfs.grad_mode import with_gradients
from sfs.light import estimate_sh_light
from sfs.sh import sh_irradiance

from ..rotation import axis_angle_to_matrix
from .landmark_fit import (NORMALISED_SIZE, _normaliser, excluded_expressions, exp_l1_weights, landmark_weights,
                           reprojection_residual)

if TYPE_CHECKING:
    from ..detections import DetectionBatch
    from .coarse import CoarseResult, CoarseSettings
    from .correspondence import Correspondence

PHOTO_REGIONS = ("skin", "nose")  # smooth, roughly Lambertian: the regions the polish compares

# Adam's step size per parameter group, as multiples of ``CoarseSettings.photometric_lr``. Adam's
# steps are about lr in each parameter's own units, so these put one step on a comparable
# footing: 0.05 coefficient units (a twentieth of one standard deviation of identity), 0.0005
# rad of rotation (0.05 mm at the face's 100 mm radius), 0.05 mm of translation (through
# TRANSLATION_STEP_MM) and 0.01 of SH light and albedo (in [0, 1] colour units).
LR_COEFFS = 5.0
LR_ROTATION = 0.05
LR_TRANSLATION = 0.5
LR_LIGHT = 1.0
LR_ALBEDO = 1.0
# The translation variable is in cm (mm per unit): its step is then balanced with the rotation's
# (0.05 mm against 0.05 mm at the face's radius, above).
TRANSLATION_STEP_MM = 10.0


def compared_pixels(labels: torch.Tensor, erode_px: int = 0) -> torch.Tensor:
    """(B, H, W) region labels -> (B, H, W) bool: the pixels the polish compares, those of
    ``PHOTO_REGIONS`` whose (2 erode_px + 1)^2 window lies in those regions too (``erode_px`` 0: all)."""
    region = in_regions(labels, PHOTO_REGIONS)
    if erode_px <= 0:
        return region
    # a min filter as a max filter of the complement (max_pool2d pads with -inf: the image's edge does not erode)
    return -F.max_pool2d(-region[:, None].float(), 2 * erode_px + 1, stride=1, padding=erode_px)[:, 0] > 0.5


def shading_outliers(target: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, H, W) bool: the pixels of ``mask`` whose intensity over the predicted one (``target`` and
    ``predicted`` (B, H, W, 3) in [0, 1], grey means) lies outside [ratio, 1 / ratio] times the face's median
    ratio (``ratio`` in (0, 1)): darker or brighter than a shape error's shading can make one skin colour
    (a beard, brows, a mole, a cast shadow, a highlight), which would otherwise read as shape."""
    log_ratio = torch.log(target.mean(-1).clamp_min(1e-3) / predicted.mean(-1).clamp_min(1e-3))
    out = torch.zeros_like(mask)
    for i in range(mask.shape[0]):  # per face: a median over its own pixels (a handful of faces)
        if not bool(mask[i].any()):
            continue
        median = log_ratio[i][mask[i]].median()
        out[i] = mask[i] & ((log_ratio[i] - median).abs() > abs(math.log(ratio)))
    return out


@with_gradients  # Adam needs autograd even when the caller fits under no_grad or inference_mode
def photometric_refine(model: MorphableModel, batch: "DetectionBatch", corr: "Correspondence",
                       coarse: "CoarseResult", settings: "CoarseSettings", renderer,
                       shared_identity: bool = False, landmark_scale: float = 1.0,
                       id_prior_scale: float = 1.0) -> "CoarseResult":
    """The polish of the module doc on a batch of B faces; returns the coarse result updated.

    ``shared_identity``: the B faces are views of one person: one identity for all (the
    coarse result's first face's, which a joint fit gives every view), its prior counted once
    (:mod:`fitting.stages.joint`); pose, expression, light and skin colour stay per view.
    ``landmark_scale``: a factor on each face's landmark term alone (the priors keep
    ``settings.landmark_weight``'s scale), which the joint fit lowers as views are added;
    ``id_prior_scale``: a factor on the identity prior alone (the joint fit's many views outweigh it).
    """
    t0 = time.perf_counter()
    dev = model.device
    b, s_full = len(batch), batch.size
    size = settings.photometric_size
    scale = size / s_full
    camera = coarse.camera
    k = camera.intrinsics * scale
    target = F.interpolate(batch.images.permute(0, 3, 1, 2).to(dev), size=(size, size), mode="area").permute(0, 2, 3, 1)
    labels = F.interpolate(batch.region_labels[:, None].float().to(dev), size=(size, size), mode="nearest")[:, 0].long()
    region = compared_pixels(labels, settings.photometric_erode_px)

    uv = batch.uv.to(dev)
    w_mp = landmark_weights(batch, corr, settings, camera.rotation).to(dev)
    # The least squares' fusion (fitting.stages.fusion) holds here too: MediaPipe's weights times its
    # trust, the regressor's 68 points (the model's multipie68 vertices) with their weights.
    w_lm = w_mp if coarse.landmark_trust is None else w_mp * coarse.landmark_trust.to(w_mp)[:, None]
    ids68 = model.landmark_sets["multipie68"].to(dev) if coarse.points68 is not None else None
    if ids68 is not None:
        uv = torch.cat([uv, coarse.points68.to(uv)], 1)
        w_lm = torch.cat([w_lm, coarse.weights68.to(w_lm)], 1)
    norm = _normaliser(uv, w_lm)

    def landmark_residual(verts, rot, t):
        """(B, K [+ 68], 2) pixels: the landmark points projected minus their targets."""
        pts = coarse.landmark_points(corr, verts)
        if ids68 is not None:
            pts = torch.cat([pts, verts[:, ids68]], 1)
        return reprojection_residual(pts, rot, t, uv, camera.intrinsics)
    id_param = (coarse.id_coeffs[:1] if shared_identity else coarse.id_coeffs).clone().requires_grad_(True)
    id_views = b if shared_identity else 1  # how many faces share each identity: its prior is counted once
    exp_c = coarse.exp_coeffs.clone().requires_grad_(True)
    rotvec = torch.zeros(b, 3, device=dev, requires_grad=True)
    dt = torch.zeros(b, 3, device=dev, requires_grad=True)
    tris = model.triangles
    keep_exp = ~excluded_expressions(model, settings).to(dev)
    l1 = exp_l1_weights(model, settings).to(dev)

    def camera_vertices():
        verts = model(id_param.expand(b, -1), exp_c * keep_exp)
        rot = axis_angle_to_matrix(rotvec) @ camera.rotation
        t = camera.translation + dt * TRANSLATION_STEP_MM
        return verts, rot, t, torch.einsum("bij,bvj->bvi", rot, verts) + t[:, None]

    # Light by least squares with the mean skin colour as albedo (fine stage, step 1, at coarse resolution).
    with torch.no_grad():
        verts, rot, t, vc = camera_vertices()
        frags = renderer.rasterize(vc, tris, k, size, size)
        n_img = F.normalize(renderer.interpolate(vertex_normals(vc, tris), frags), dim=-1)

        def skin_and_light(compared):  # the compared pixels, their mean colour and the light fitted to them
            seen = frags.mask & compared
            colour = (target * seen[..., None]).sum((1, 2)) / seen.sum((1, 2)).clamp_min(1)[:, None]
            return seen, colour, estimate_sh_light(target, n_img, colour, seen)

        mask, mean_col, light0 = skin_and_light(region)
        if settings.photometric_outlier_ratio > 0:
            region = region & ~shading_outliers(target, mean_col[:, None, None] * sh_irradiance(n_img, light0), mask,
                                                settings.photometric_outlier_ratio)
            mask, mean_col, light0 = skin_and_light(region)
    # One skin colour per face: a per-vertex albedo would explain the shading
    # away and leave the geometry nothing to learn from.
    light = light0.clone().requires_grad_(True)
    albedo = mean_col.clone().contiguous().requires_grad_(True)  # (B, 3)
    lr = settings.photometric_lr
    opt = Adam([{"params": [id_param, exp_c], "lr": lr * LR_COEFFS},
                {"params": [rotvec], "lr": lr * LR_ROTATION},
                {"params": [dt], "lr": lr * LR_TRANSLATION},
                {"params": [light], "lr": lr * LR_LIGHT},
                {"params": [albedo], "lr": lr * LR_ALBEDO}])
    lm_scale = settings.landmark_weight / (NORMALISED_SIZE ** 2)
    # The step sizes fall to zero along a cosine. At a constant rate Adam ends
    # anywhere in a ball of +-lr steps around the optimum, and rounding picks
    # the point: one photo fitted with 1 and with 2 threads came out up to
    # 0.85-3.4 mm apart (0.2-0.43 mm mean per vertex); annealed, 0.001-0.3 mm
    # (at most 0.07 mm mean) in 7 runs. Synthetic bench, 20 faces: mean apart
    # 0.038 -> 0.022 mm, shape error 3.214 -> 3.205 mm.
    base_lrs = [group["lr"] for group in opt.param_groups]
    for step in range(settings.photometric_steps):
        opt.zero_grad()
        verts, rot, t, vc = camera_vertices()
        frags = renderer.rasterize(vc, tris, k, size, size)
        normals = F.normalize(renderer.interpolate(vertex_normals(vc, tris), frags), dim=-1)
        img = albedo[:, None, None, :] * sh_irradiance(normals, light)
        mask = (frags.mask & region)[..., None].to(img)
        photo = (((img - target) ** 2) * mask).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3)).clamp_min(1))
        res = landmark_residual(verts, rot, t) * norm[:, None, None]
        lm = ((res ** 2).sum(-1) * w_lm).sum(1) / w_lm.sum(1).clamp_min(1e-6) * (lm_scale * landmark_scale)
        # the least squares' priors (landmark_fit.solve_shape), the expressions' L1 linear as they are kept >= 0
        prior = (settings.lambda_id * id_prior_scale * (id_param ** 2).sum(1) / id_views + settings.lambda_exp * (exp_c ** 2).sum(1)
                 + (l1 * exp_c).sum(1)) * lm_scale / w_lm.sum(1).clamp_min(1e-6)
        loss = (photo + lm + prior).sum()
        loss.backward()
        opt.step()
        cosine_annealed(opt, base_lrs, step + 1, settings.photometric_steps)
        with torch.no_grad():
            lo, hi = settings.exp_bounds
            exp_c.clamp_(lo, hi)
            albedo.clamp_(0.0, 1.0)
    with torch.no_grad():
        verts, rot, t, _ = camera_vertices()
        # the reported error: against MediaPipe's points (as the least squares reports it)
        err = landmark_residual(verts, rot, t).norm(dim=-1)[:, :w_mp.shape[1]]
        wm = (w_mp > 0).to(err)
        return dataclasses.replace(
            coarse, camera=camera.with_pose(rot, t), vertices=verts.detach(),
            id_coeffs=id_param.detach().expand(b, -1).contiguous(),
            exp_coeffs=exp_c.detach(), landmark_error=(err * wm).sum(1) / wm.sum(1), light=light.detach(),
            albedo=albedo.detach()[:, None, :].expand(-1, model.n_vertices, -1).contiguous(),
            seconds=coarse.seconds + time.perf_counter() - t0)
