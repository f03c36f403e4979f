"""One UV albedo from several views of one person (issue 18): each texel from the views that see it best.

The single-view fine stage bakes one photo's albedo into the model's UV atlas
(:func:`fitting.stages.texture.bake_albedo`); a turned head leaves its far
cheek to the pull-push fill there. Here every view of the joint fit
(:mod:`fitting.stages.joint`: one identity, each view's pose and expression)
gives each texel a colour and a confidence, and the texture is their
confidence-weighted mean:

1. per view, the photo's colour at the texel's surface point divided by a
   grey shading estimate (an order-2 SH light fitted to the photo on the
   fit's normals with a constant albedo, :func:`sfs.light.estimate_sh_light`),
   so a cheek lit in one view and shaded in another agree;
2. per view and texel, a confidence: seen (inside the face's landmark regions,
   depth within ``tolerance_mm`` of the rendered depth), times the cosine
   between the surface normal and the ray to the camera (the photo's pixels
   per unit of surface), times a ramp from 0 at the face mask's edge to 1
   ``edge_px`` inside it (hair, background and misfit mix in at the edge);
3. each view's albedo scaled per channel to the reference view's exposure
   over the texels both see (a camera's auto exposure, the light's falloff
   as the head turns);
4. the weighted mean with weights ``confidence ** sharpness`` (1 by default:
   the confidence-weighted mean; large values approach a best-view selection
   feathered where two views' confidences cross); texels no view sees well
   enough are filled by :func:`fitting.stages.texture.fill_unseen`.

Views are processed ``chunk`` at a time and summed, so a video's hundreds of
frames need the memory of one chunk. Shapes: N views, V vertices, S crop px,
H x W texels (W = ``tiles * H``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from landmarks import SKIN_REGIONS, in_regions
from morphable.geometry import vertex_normals
from sfs.light import estimate_sh_light
from sfs.projection import camera_to_pixel, sample_at_pixels
from sfs.sh import sh_irradiance

from .texture import atlas_fragments, fill_unseen


@dataclass
class ViewTextureSettings:
    """How the views' albedos are merged into one UV texture."""

    # px; the UV atlas is (height, tiles * height). The single-view fine stage's 1024 (FineSettings)
    # would cost 4x the per-view work for texels finer than the photos: a 512 px crop puts the face
    # at about 300 px across, and the face's shell spans about 450 texels of a 512-high atlas.
    texture_height: int = 512
    # Landmark regions (landmarks.REGION_NAMES) whose photo pixels give colour: the single-view
    # texture's (landmarks.SKIN_REGIONS). Beyond them the model's surface (scalp, ears, neck) shows hair or
    # background; with the eyes in, the coarse mesh's eye sockets took the whites as streaks of glare
    # on the shared 45-degree photo and its mirror image; left out they are filled like the single
    # view's.
    regions: Tuple[str, ...] = SKIN_REGIONS
    # crop px: the ramp of the confidence from the face mask's edge (0) inward (1); as the
    # single-view texture's texture_edge_px (4 px), the band where hair, background and
    # grazing-angle shading mix into the colour, with as much again to feather over.
    edge_px: int = 8
    # mm: a texel is seen when its depth is within this of the rendered depth at its pixel
    # (FineSettings.visibility_tolerance_mm's role for one view).
    tolerance_mm: float = 3.0
    # Confidence is cos(normal, ray) * edge ramp; the merge weighs each view by confidence ** sharpness
    # (unitless). Large values pick the best view with a hard seam; 1 is the confidence-weighted mean.
    # Measured on synthetic views of the mean face at yaw -40 / 0 / +40 (tools/view_texture_pictures.py
    # --sharpness), cheek error left / right after a per-channel scale, sharpness 1 / 2 / 4:
    #   pattern of 6 cycles, exact poses:      0.0183/0.0125  0.0191/0.0130  0.0197/0.0129 (one view: 0.0191/0.0105)
    #   6 cycles, yaw off by -3/+3/-3 deg:     0.0222/0.0149  0.0226/0.0159  0.0227/0.0173
    #   6 cycles, yaw off by +3 deg in all:    0.0213/0.0198  0.0211/0.0205  0.0209/0.0211
    #   24 cycles, exact poses:                0.0036/0.0037  0.0036/0.0037  0.0036/0.0036
    #   24 cycles, yaw off by -3/+3/-3 deg:    0.0196/0.0180  0.0227/0.0201  0.0277/0.0247 (one view: 0.034)
    #   24 cycles, yaw off by +3 deg in all:   0.0305/0.0322  0.0317/0.0329  0.0328/0.0337 (one view: 0.034)
    # A sharper weighting won once, by 0.0004 on one cheek: misfit views are better averaged than picked.
    # What might favour it (an expression or a highlight that one view has and the others not) is not
    # measured.
    sharpness: float = 1.0
    # A texel whose best confidence is below this is filled from its neighbours (fill_unseen):
    # below it (cos 0.15: 81 degrees from the ray, or the outermost 1/8 of the edge ramp at
    # cos 1) the colour is a few stretched photo pixels.
    min_confidence: float = 0.15
    # Divide the photo's colour by a grey SH shading fitted to each view (step 1); off: photo colour.
    remove_shading: bool = True
    # Shading below this fraction of the view's mean is clamped (unitless). The coarse mesh's normals
    # under the nose, in the eye sockets and at the mouth's corners predict deep shade that the photo
    # does not have (light bounces in; the mesh's folds are not the face's): at 0.25 those texels came
    # out as white glare on the shared 45-degree photo and its mirror image, at 0.5 still visibly, at
    # 0.65 faintly; the synthetic test's cheek errors are the same at 0.25 and 0.65 (0.0190 / 0.0104 at
    # sharpness 4).
    min_shading: float = 0.65
    # Scale each view per channel to the reference view over the texels both see (step 3).
    match_exposure: bool = True
    # Views rasterised and sampled at once: memory of about chunk x H x W x 15 bytes (a third of the
    # atlas's texels are the mesh's). Measured per view, 4 -> 16 synthetic views at 512 px, best of 3
    # CPU seconds on this 2-core machine: chunk 4 0.23 s, chunk 8 0.27 s (plus 0.2-0.4 s once per merge).
    chunk: int = 4
    # At most this many views are merged (None: all): a video's neighbouring frames show the same
    # texels from nearly the same angle, and each view costs about 0.23 s (above) against the joint
    # coarse fit's 0.15 s per frame. :func:`pick_views` keeps the reference and views spread evenly
    # over the yaw range (the turned head's extremes included).
    max_views: Optional[int] = 16
    # The light is fitted on every this-many-th crop pixel in each direction: an order-2 SH light is
    # smooth, and the float64 least squares over all of a 512 px crop's pixels was half the merge's time.
    light_stride: int = 4


class ViewTextures(NamedTuple):
    """The merge's result: ``texture`` (H, W, 3) in [0, 1]; ``seen`` (H, W) bool, texels some view
    gave (the rest filled); ``best`` (H, W) int64, the view with the largest weight (-1: none);
    ``coverage`` (N,) the fraction of the seen texels each view was the best for; ``gains`` (N, 3)
    the exposure scales applied."""

    texture: torch.Tensor
    seen: torch.Tensor
    best: torch.Tensor
    coverage: torch.Tensor
    gains: torch.Tensor


class _ViewSamples(NamedTuple):
    albedo: torch.Tensor  # (n, P, 3)
    confidence: torch.Tensor  # (n, P) in [0, 1]


def edge_ramp(mask: torch.Tensor, px: int) -> torch.Tensor:
    """(B, S, S) bool -> (B, S, S) float: 0 outside ``mask``, rising linearly from its edge to 1 at ``px``
    pixels inside (a box filter's mean over (2 px + 1)^2, 0.5 at the edge, mapped 0.5 -> 0, 1 -> 1)."""
    if px <= 0:
        return mask.float()
    k = 2 * px + 1  # separable: rows then columns (the counts at the border multiply, so still the mean)
    mean = F.avg_pool2d(mask.float()[:, None], (1, k), 1, (0, px), count_include_pad=False)
    mean = F.avg_pool2d(mean, (k, 1), 1, (px, 0), count_include_pad=False)[:, 0]
    return ((2 * mean - 1) * mask).clamp(0, 1)


def grey_shading(images: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 9, 3) SH light, the grey shading's coefficients, scaled so the shading's mean over ``mask`` is 1.

    The light is fitted to the photo's grey level with a constant albedo; the per-image constant is
    divided out by the normalisation, so ``image / shading`` keeps the photo's colour and mean level."""
    grey = images.mean(-1, keepdim=True).expand_as(images)
    light = estimate_sh_light(grey, normals, torch.ones(images.shape[0], 3, device=images.device,
                                                          dtype=images.dtype), mask=mask)
    s = sh_irradiance(normals, light)[..., 0]
    m = mask.to(s.dtype)
    mean = (s * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1)
    return light / mean.clamp_min(1e-6)[:, None, None]


def sample_views(renderer, texel_points: torch.Tensor, texel_normals: torch.Tensor, verts_cam: torch.Tensor,
                 tris: torch.Tensor, intrinsics: torch.Tensor, images: torch.Tensor, region_labels: torch.Tensor,
                 settings: ViewTextureSettings) -> _ViewSamples:
    """Steps 1-2 for a chunk of n views: each texel's albedo and confidence in each view.

    ``texel_points`` / ``texel_normals``: (n, P, 3) camera frame, P texels on the mesh; ``verts_cam``
    (n, V, 3); ``images`` (n, S, S, 3); ``region_labels`` (n, S, S)."""
    size = images.shape[1]
    frags = renderer.rasterize(verts_cam, tris, intrinsics, size, size)
    source = in_regions(region_labels, settings.regions) & frags.mask
    uvd = camera_to_pixel(texel_points, intrinsics)
    colour = sample_at_pixels(images, uvd[..., :2])
    if settings.remove_shading:
        pixel_normals = F.normalize(renderer.interpolate(vertex_normals(verts_cam, tris), frags), dim=-1)
        st = settings.light_stride
        light = grey_shading(images[:, ::st, ::st], pixel_normals[:, ::st, ::st], source[:, ::st, ::st])
        shading = sh_irradiance(F.normalize(texel_normals, dim=-1), light)[..., :1]
        colour = colour / shading.clamp_min(settings.min_shading)
    depth = sample_at_pixels(frags.depth[..., None], uvd[..., :2])[..., 0]
    ramp = sample_at_pixels(edge_ramp(source, settings.edge_px)[..., None], uvd[..., :2])[..., 0]
    to_camera = F.normalize(-texel_points, dim=-1)
    cosine = (texel_normals * to_camera).sum(-1).clamp_min(0)
    seen = (depth - uvd[..., 2]).abs() < settings.tolerance_mm
    return _ViewSamples(albedo=colour, confidence=cosine * ramp * seen)


def exposure_gains(albedo: torch.Tensor, weight: torch.Tensor, ref_albedo: torch.Tensor,
                   ref_weight: torch.Tensor, min_texels: float = 100.0) -> torch.Tensor:
    """(n, 3) per-channel scales taking each view's ``albedo`` (n, P, 3) to ``ref_albedo`` (P, 3) over
    the texels both weigh (``weight`` (n, P), ``ref_weight`` (P,)): the ratio of the overlap's
    weighted means. 1 where the overlap holds fewer than ``min_texels`` texels' worth of weight."""
    w = (weight * ref_weight)[..., None]
    num, den = (w * ref_albedo).sum(1), (w * albedo).sum(1)
    ok = (w[..., 0].sum(1) >= min_texels)[:, None] & (den > 1e-6)
    return torch.where(ok, num / den.clamp_min(1e-6), torch.ones_like(num))


def pick_views(yaw_deg: torch.Tensor, reference: int, count: Optional[int]) -> List[int]:
    """Indices (ascending) of at most ``count`` views to merge, ``reference`` among them: views at ``count``
    evenly spaced ranks of the views' yaw (``yaw_deg`` (N,)), the smallest and largest yaw included, the one
    ranked nearest the reference replaced by it. ``count`` None or at least N: all views."""
    n = yaw_deg.shape[0]
    if count is None or count >= n:
        return list(range(n))
    order = torch.argsort(yaw_deg).tolist()
    ranks = torch.linspace(0, n - 1, count).round().long().tolist()
    ref_rank = order.index(reference)
    nearest = min(range(count), key=lambda j: abs(ranks[j] - ref_rank))
    ranks[nearest] = ref_rank
    chosen = {order[r] for r in ranks}
    for i in order:  # two ranks may round to one view: fill up in yaw order
        if len(chosen) >= count:
            break
        chosen.add(i)
    return sorted(chosen)


def merge_views(renderer, verts_cam: torch.Tensor, tris: torch.Tensor, atlas_uvs: torch.Tensor,
                uv_tris: torch.Tensor, tiles: int, intrinsics: torch.Tensor, images: torch.Tensor,
                region_labels: torch.Tensor, reference: int = 0,
                settings: ViewTextureSettings = ViewTextureSettings()) -> ViewTextures:
    """The views' merged UV albedo (module doc).

    Args:
        verts_cam: (N, V, 3) each view's face (the shared identity with its expression), its camera's frame, mm;
            ``tris`` (F, 3) into them.
        atlas_uvs: (T, 2) in [0, 1]^2 over the whole atlas (``model.uv_atlas()``); ``uv_tris`` (F, 3);
            ``tiles``: the atlas's width in heights.
        intrinsics: (N, 4) crop px; ``images`` (N, S, S, 3) in [0, 1]; ``region_labels`` (N, S, S).
        reference: the view whose exposure the others are scaled to (the detail view).
    """
    n = verts_cam.shape[0]
    h = settings.texture_height
    w = tiles * h
    dev, dt = verts_cam.device, verts_cam.dtype
    # The atlas is rasterised once; each view's texel positions and normals interpolated on it, at the
    # P texels the mesh covers only (packed: a third of the atlas; the rest is filled at the end).
    frags = atlas_fragments(renderer, atlas_uvs, uv_tris, h, w)
    on_mesh = frags.pixels  # (P,) flat texel indices
    p = on_mesh.shape[0]

    def texels(idx):
        v = verts_cam[idx]
        attr = torch.cat([v, vertex_normals(v, tris)], -1)  # (n, V, 6)
        flat = attr.permute(1, 0, 2).reshape(attr.shape[1], -1)  # (V, n*6): one interpolation for n views
        out = renderer.interpolate(flat, frags, tris, packed=True).reshape(p, len(idx), 6).permute(1, 0, 2)
        return out[..., :3], F.normalize(out[..., 3:], dim=-1)

    def samples(idx):
        pts, nrm = texels(idx)
        return sample_views(renderer, pts, nrm, verts_cam[idx], tris, intrinsics[idx], images[idx],
                            region_labels[idx], settings)

    acc = torch.zeros(p, 3, device=dev, dtype=dt)
    total = torch.zeros(p, device=dev, dtype=dt)
    best_w = torch.zeros(p, device=dev, dtype=dt)
    best = torch.full((p,), -1, dtype=torch.int64, device=dev)
    gains = torch.ones(n, 3, device=dev, dtype=dt)
    starts = list(range(0, n, settings.chunk))
    first = reference // settings.chunk * settings.chunk  # the reference's chunk first: its albedo is the scale
    for start in [first] + [s for s in starts if s != first]:
        idx = list(range(start, min(n, start + settings.chunk)))
        s = samples(idx)
        if start == first:
            ref_albedo, ref_conf = s.albedo[reference - start], s.confidence[reference - start]
        if settings.match_exposure:
            gains[idx] = exposure_gains(s.albedo, s.confidence, ref_albedo, ref_conf)
        conf = torch.where(s.confidence >= settings.min_confidence, s.confidence, torch.zeros_like(s.confidence))
        weight = conf ** settings.sharpness
        acc += (weight[..., None] * s.albedo * gains[idx][:, None]).sum(0)
        total += weight.sum(0)
        top, arg = weight.max(0)
        better = top > best_w
        best = torch.where(better, arg + start, best)
        best_w = torch.where(better, top, best_w)
    seen_p = total > 0
    colour_p = acc / total.clamp_min(1e-30)[:, None]
    counts = torch.bincount(best[seen_p], minlength=n)[:n].to(dt)
    colour = torch.zeros(h * w, 3, device=dev, dtype=dt).index_put((on_mesh,), colour_p)
    seen = torch.zeros(h * w, dtype=torch.bool, device=dev).index_put((on_mesh,), seen_p)
    best_full = torch.full((h * w,), -1, dtype=torch.int64, device=dev).index_put((on_mesh,), best)
    fallback = (colour_p * seen_p[:, None]).sum(0) / seen_p.sum().clamp_min(1)
    texture = fill_unseen(colour.reshape(1, h, w, 3), seen.reshape(1, h, w), fallback[None])[0].clamp(0, 1)
    return ViewTextures(texture=texture, seen=seen.reshape(h, w), best=best_full.reshape(h, w),
                        coverage=counts / seen_p.sum().clamp_min(1), gains=gains)
