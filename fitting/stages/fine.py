"""Fine stage: shape from shading on the medium mesh's depth map (METHOD.md eq. 4-9), and its outputs.

The image-space work is :func:`sfs.refine.refine_depth`; this module gives it
the medium mesh's depth, mask and regions, and turns its maps back into
geometry and texture:

- the detailed depth map's points in the model frame (the ``fine_grid`` mesh, :func:`fitting.mesh.grid_mesh`);
- the medium mesh, subdivided, displaced along the camera rays to the detailed depth, and beyond the SfS
  mask by the smooth part of the change carried along the surface (``fine``);
- the albedo baked into the model's UV layout (the OBJ's texture; :mod:`fitting.stages.texture`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from landmarks import REGION_NAMES, SKIN_REGIONS, in_regions
from morphable.geometry import carry_over_surface
from sfs.projection import camera_to_pixel, depth_map_to_points, pixel_to_camera, sample_at_pixels
from sfs.refine import SfsResult, SfsSettings, mask_bounds, refine_depth
from sfs.skin import brow_pixels, hair_pixels, non_skin_pixels

from ..camera import Camera
from .context import Stage
from .texture import bake_albedo

if TYPE_CHECKING:
    from .context import FitContext
    from .medium import MediumResult

# Regions whose reflectance is roughly Lambertian skin; eyes and the mouth
# interior are left to the medium mesh.
SFS_REGIONS = SKIN_REGIONS


@dataclass
class FineSettings:
    """Fine-stage settings: the SfS optimisation (``sfs``, paper defaults rescaled there) and the outputs."""

    sfs: SfsSettings = field(default_factory=SfsSettings)
    texture_height: int = 1024  # px; the UV atlas is (height, tiles * height)
    mask_erode_px: int = 2  # px at the crop: keeps silhouette pixels (depth edges) out of SfS
    # px at the crop: the albedo this close to the face's outer edge mixes in hair, background
    # and grazing-angle shading (a dark line round the face in the texture); those texels are
    # filled from further in, like the unseen ones. The eyes' and mouth's edges are kept.
    texture_edge_px: int = 4
    # Midpoint subdivisions of the medium mesh before it is displaced to the detailed depth
    # (``fine.obj``): the model's edges span about 6 crop pixels on the face, too coarse for
    # wrinkles; each level splits every triangle in four (0: the model's own topology).
    displaced_subdivisions: int = 2
    # Regions (landmarks.REGION_NAMES) whose depth stays the medium mesh's: they still
    # give the light and get an albedo (the texture keeps the eyebrows). Eyebrows are
    # hair: their colour varies at the scale of the detail and became ridges (measured on
    # 3 synthetic faces from the true smooth depth, eyebrows left out of SfS: normal error
    # 5.66 -> 4.94 deg; on the 20-face bench: -5.2 % -> -2.0 % against medium).
    fixed_depth_regions: Tuple[str, ...] = ("brows",)
    # Pixels whose colour says "not skin" keep the medium depth too (sfs.skin.non_skin_pixels):
    # glasses frames, a straw, hair strands would otherwise be carved into the face.
    # chroma: robust sigmas of the hue offset from the skin's (unitless; lips and nose are
    # exempt); dark: fraction of the local (6 px) mean intensity (unitless). Set on the shared
    # photos by looking at the maps: 4 sigmas / 0.6 took deep folds, highlights in low-key
    # light and lips; 15 / 0.3 takes the frames and the straw and leaves the folds. None: off.
    non_skin_chroma_sigmas: Optional[float] = 15.0
    non_skin_dark_ratio: float = 0.3
    # A fringe over the forehead keeps the medium depth too (sfs.skin.hair_pixels): pixels in the
    # mask's top quarter coloured like the 10-px band just above the mask, where that band differs
    # from the skin by more than this many robust skin sigmas (unitless). On the nine photos it
    # takes the astronaut's fringe and, on Grace Hopper (white hair and a black cap above the
    # edge), the cap's rim and the tops of the glasses frames; on the other seven nothing. None: off.
    hair_separation: Optional[float] = 4.0
    # Eyebrow hair outside the landmark eyebrow region keeps the medium depth too (sfs.skin.brow_pixels):
    # pixels within this many crop px of the region coloured like its hair. The region is thin and
    # ends early (on the photos the lower edge of most brows lies outside it). From the true smooth
    # depth on 8 synthetic faces (painted brows) the fine normal error went 4.55 -> 4.21 deg (the
    # start: 4.36). On the nine photos it takes the brows' lower edges and inner heads, on Grace
    # Hopper the tops of the frames, on the low-key photo part of the shadow under the brow ridge.
    # None: off.
    brow_reach_px: Optional[int] = 6
    # Identity modes of the model (the first this many) whose coefficients the SfS fits to the shading
    # before the per-pixel detail (SfsSettings.basis_iters; 0: none): they correct the medium mesh's
    # smooth shape, which the per-pixel terms do not move. 60 rather than all 100: 100 modes with 30
    # iterations cost about +3 s per face for 0.1 deg (see SfsSettings.basis_iters). The change is applied
    # to the depth map (so to the displaced mesh's seen vertices, and carried past them by carry_mm), not to
    # the whole mesh: moving every vertex by the modes measured worse on the scan at yaw 60 (RMSE 2.45 -> 2.56
    # mm, anchor 0.001; the hidden side follows modes fitted to the seen one) and at textured yaw 0 (1.46 ->
    # 1.50), better elsewhere.
    shape_modes: int = 60
    # mm along the surface: the smooth change (the modes' and the free change's, SfsResult.smooth_change)
    # moves the mesh past the SfS mask too, continued from the mask's edge and faded out over this distance
    # (morphable.geometry.carry_over_surface): stopped at the edge it left a step in fine.obj along the face's
    # outline (the temples, the jaw line), as large as the change there. Along the mesh rather than in the
    # image, so that hidden vertices at the silhouette and the ears behind the face's outline follow their
    # own surface. 0: the change stops at the mask's edge.
    carry_mm: float = 20.0
    # The model's expressions join those modes, a unit coefficient being this much activation (the identity
    # modes' unit is one standard deviation; the same prior, SfsSettings.basis_prior, then holds a change of
    # about 0.3 activation as likely as one sigma of identity); 0: identity modes only. The coarse fit's
    # expressions come from landmarks alone, and what they get wrong is smooth shape the shading shows. Measured
    # on the same inputs: `bench fine` (8 synthetic faces, seed 0, mild random expressions) fine vs medium
    # normal error -5.0 % -> -5.4 % (1.0: not run); `bench scan` from its cached medium results, fine normals /
    # coarse's, uniform yaw 0 / 40, textured 0 / 20: 0.849 / 0.892 / 0.903 / 0.944 -> 0.847 / 0.880 / 0.898 / 0.942
    # (1.0: 0.844 / 0.879 / 0.910 / 0.940).
    expression_mode_activation: float = 0.3
    # Regions whose albedo is the skin's (the SfS albedo prior's region means, eq. 6, and the light fit's
    # albedo): the nose is skin. As its own region, its mean colour took in its shading (brighter on the
    # lit side, darker on the other) and so the nose's relief out of the shading. Measured with the fine
    # stage's free depth change (SfsSettings.ms_cells) from the cached medium results of `bench scan`: fine
    # normal error / coarse's, uniform yaw 0 / 40, textured 0 / 20: 0.78 / 0.90 / 0.90 / 0.94 ->
    # 0.77 / 0.87 / 0.90 / 0.92.
    skin_albedo_regions: Tuple[str, ...] = ("nose",)
    visibility_tolerance_mm: float = 3.0  # a vertex/texel is seen when its depth is this close to the depth map


@dataclass
class FineResult:
    """What the fine stage hands on, for a batch of B faces.

    - ``camera``: the batch's cameras (unchanged since the coarse stage);
    - ``vertices``: (B, V', 3) model frame, mm: the medium mesh subdivided (``topology``) and
      displaced along the camera rays to the detailed depth (past the SfS mask, by the carried smooth
      change: :func:`detailed_mesh`);
    - ``topology``: the subdivided triangles and UV layout ``vertices`` share (positions None);
    - ``sfs``: the image-space maps of :func:`sfs.refine.refine_depth` (crop pixels, camera frame);
    - ``grid_vertices``: (B, S, S, 3) model frame, mm: the detailed depth map's points;
    - ``textures``: (B, Ht, Wt, 3) albedo in the model's UV atlas;
    - ``metrics``: per face, PSNR / SSIM of the re-render in the mask.
    """

    camera: Camera
    vertices: torch.Tensor
    topology: "Subdivided"
    sfs: SfsResult
    grid_vertices: torch.Tensor
    textures: torch.Tensor
    metrics: List[dict]


def sfs_mask_and_labels(region_labels: torch.Tensor, coverage: torch.Tensor, erode_px: int):
    """(B, S, S) landmark region labels and render coverage -> (mask, labels with -1 outside)."""
    mask = erode(in_regions(region_labels, SFS_REGIONS) & coverage, erode_px)
    labels = torch.where(mask, region_labels, torch.full_like(region_labels, -1))
    return mask, labels


def albedo_regions(labels: torch.Tensor, settings: FineSettings) -> torch.Tensor:
    """(B, S, S) region labels for the SfS albedo: ``settings.skin_albedo_regions`` relabelled as skin."""
    if not settings.skin_albedo_regions:
        return labels
    skin = torch.full_like(labels, REGION_NAMES.index("skin"))
    return torch.where(in_regions(labels, settings.skin_albedo_regions), skin, labels)


def erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    """(B, H, W) bool mask less a band of ``px`` pixels along its edge (a (2 px + 1)^2 square)."""
    if px <= 0:
        return mask
    return -F.max_pool2d(-mask.float()[:, None], 2 * px + 1, 1, px)[:, 0] > 0.5


def texture_source_mask(mask: torch.Tensor, region_labels: torch.Tensor, edge_px: int) -> torch.Tensor:
    """The SfS mask (B, S, S) less a band of ``edge_px`` along the face's outer edge.

    ``region_labels``: (B, S, S) landmark regions; the eyes and the mouth's interior count as
    face, so the band does not follow their edges (the lash and lip lines stay in the texture).
    """
    return mask & erode(mask | in_regions(region_labels, ("eyes", "mouth_interior")), edge_px)


# px: the colour tests of fixed_depth_pixels read the photo at most hair_pixels' band (10 px) above the mask and
# a few px of dilation beyond it; they run on the masks' box grown by this (the face spans a third of the crop)
FIXED_BOX_MARGIN_PX = 32


def fixed_depth_pixels(images: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                       settings: FineSettings) -> torch.Tensor:
    """(B, S, S) bool: SfS pixels whose depth stays the medium mesh's: the fixed regions and, unless
    switched off, the pixels whose colour is not skin, a fringe of hair and eyebrow hair outside the
    eyebrow region (see FineSettings)."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    box = grown_mask_box(mask, FIXED_BOX_MARGIN_PX)
    if box is None:
        return out
    rows, cols = box
    out[:, rows, cols] = _fixed_depth_pixels_in(images[:, rows, cols], mask[:, rows, cols], labels[:, rows, cols],
                                                settings)
    return out


def grown_mask_box(mask: torch.Tensor, margin_px: int) -> Optional[Tuple[slice, slice]]:
    """(rows, columns) slices of the (B, H, W) masks' union bounding box grown by ``margin_px`` and clipped to
    the image; None for empty masks."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return None
    top, bottom, left, right = bounds
    h, w = mask.shape[-2:]
    return (slice(max(0, top - margin_px), min(h, bottom + 1 + margin_px)),
            slice(max(0, left - margin_px), min(w, right + 1 + margin_px)))


def _fixed_depth_pixels_in(images: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                           settings: FineSettings) -> torch.Tensor:
    fixed = in_regions(labels, settings.fixed_depth_regions)
    images = images.to(mask.device)
    skin = in_regions(labels, ("skin",))
    if settings.non_skin_chroma_sigmas is not None:
        fixed |= non_skin_pixels(images, mask, skin, settings.non_skin_chroma_sigmas, settings.non_skin_dark_ratio,
                                 hue_exempt=in_regions(labels, ("lips", "nose")))
    if settings.hair_separation is not None:
        fixed |= hair_pixels(images, mask, skin, separation=settings.hair_separation)
    if settings.brow_reach_px is not None:
        fixed |= brow_pixels(images, mask, skin, in_regions(labels, ("brows",)), reach_px=settings.brow_reach_px)
    return fixed & mask


def run(context: "FitContext", batch, previous: "MediumResult") -> FineResult:
    """The fine stage on a batch: shape from shading on the medium mesh's depth map, then the
    detailed geometry (the displaced, subdivided mesh and the depth grid) and the UV albedo."""
    model, renderer = context.model, context.renderer
    settings: FineSettings = context.settings["fine"]
    size, camera = batch.size, previous.camera
    k = camera.intrinsics
    verts_cam = camera.to_camera(previous.vertices)
    with torch.no_grad():
        frags = renderer.rasterize(verts_cam, model.triangles, k, size, size)
    mask, labels = sfs_mask_and_labels(batch.region_labels, frags.mask, settings.mask_erode_px)
    basis = shape_mode_depths(renderer, model, camera, verts_cam, frags, settings)
    sfs = refine_depth(batch.images, frags.depth, mask, k, region_labels=albedo_regions(labels, settings),
                       settings=settings.sfs, fixed_depth=fixed_depth_pixels(batch.images, mask, labels, settings),
                       depth_basis=basis)

    # Geometry from the detailed depth.
    with torch.no_grad():
        pts_cam = depth_map_to_points(sfs.depth, k)  # (B, S, S, 3)
        b = pts_cam.shape[0]
        grid = camera.to_model(pts_cam.reshape(b, -1, 3)).reshape(pts_cam.shape)
        atlas = model.uv_atlas()
        dense = detailed_mesh(verts_cam, model.triangles, atlas, model.uv_triangles, k, sfs, frags.depth, settings)
        source = texture_source_mask(sfs.mask, batch.region_labels, settings.texture_edge_px)
        textures = bake_albedo(renderer, verts_cam, model.triangles, atlas, model.uv_triangles, k, sfs.albedo,
                               sfs.depth, source, settings.texture_height, model.uv_tiles,
                               settings.visibility_tolerance_mm)
        metrics = [appearance_metrics(batch.images[i], sfs.rendered[i], sfs.mask[i]) for i in range(b)]
    return FineResult(camera=camera, vertices=camera.to_model(dense.vertices), topology=dense._replace(vertices=None),
                      sfs=sfs, grid_vertices=grid, textures=textures, metrics=metrics)


STAGE = Stage("fine", FineSettings, run)


def shape_mode_depths(renderer, model, camera, verts_cam: torch.Tensor, frags, settings: FineSettings):
    """The ``depth_basis`` the stage gives refine_depth: (B, K, S', S') mm per unit of each shape mode (the
    model's first ``settings.shape_modes`` identity modes and, scaled, its expressions), at the SfS working
    size S'; None when the modes are off. ``verts_cam`` (B, V, 3) the mesh in the camera frame, ``frags`` its
    rasterisation at the crop size with ``camera``'s intrinsics."""
    if not (settings.shape_modes > 0 and settings.sfs.basis_iters > 0):
        return None
    size = frags.tri_id.shape[-1]
    # at the SfS working size (the modes are smooth; refine_depth works there anyway)
    small = min(size, settings.sfs.working_size)
    k_small = camera.intrinsics * (small / size)
    with torch.no_grad():
        frags_small = frags if small == size else renderer.rasterize(verts_cam, model.triangles, k_small, small, small)
        modes = model.id_basis[:settings.shape_modes]
        if settings.expression_mode_activation > 0:
            modes = torch.cat([modes, settings.expression_mode_activation * model.exp_basis.to(modes)])
        modes = modes @ camera.rotation.transpose(1, 2).to(model.id_basis)[:, None]
        return mode_depth_maps(renderer, frags_small, verts_cam, model.triangles, modes, k_small)


def mode_depth_maps(renderer, frags, verts_cam: torch.Tensor, tris: torch.Tensor, modes_cam: torch.Tensor,
                    intrinsics: torch.Tensor, chunk: int = 16, min_cosine: float = 0.2) -> torch.Tensor:
    """(B, K, H, W) mm: the depth change at each covered pixel per unit of each vertex displacement mode.

    ``modes_cam``: (B, K, V, 3) camera-frame displacements. A surface point p with normal n moved by v
    meets its pixel's ray (through q, the point at depth 1) at depth change n.v / n.q (the tangent plane
    moved); grazing pixels (|n.q| / |q| below ``min_cosine``) are clamped there. 0 off the mesh.
    """
    from morphable.geometry import vertex_normals
    b, kk = modes_cam.shape[:2]
    h, w = frags.tri_id.shape[1:]
    n = renderer.interpolate(vertex_normals(verts_cam, tris), frags, packed=True)  # (N, 3)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ones = torch.ones(b, h, w, device=verts_cam.device, dtype=verts_cam.dtype)
    q = frags.gather(depth_map_to_points(ones, intrinsics.to(ones)))  # (N, 3)
    nq = (n * q).sum(-1)
    floor = min_cosine * q.norm(dim=-1)
    nq = torch.where(nq < 0, -1.0, 1.0).to(nq) * torch.maximum(nq.abs(), floor)
    out = []
    for s0 in range(0, kk, chunk):
        m = modes_cam[:, s0:s0 + chunk]  # (B, k, V, 3)
        kc = m.shape[1]
        attr = m.permute(0, 2, 1, 3).reshape(b, -1, kc * 3)
        v = renderer.interpolate(attr, frags, packed=True).reshape(-1, kc, 3)  # (N, k, 3)
        dd = (v * n[:, None]).sum(-1) / nq[:, None]  # (N, k)
        out.append(frags.scatter(dd))  # (B, H, W, k)
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


class Subdivided(NamedTuple):
    """A subdivided batch of meshes: positions, and the topology and UV layout they share."""

    vertices: Optional[torch.Tensor]  # (B, V', 3)
    triangles: np.ndarray  # (F', 3)
    uvs: np.ndarray  # (T', 2)
    uv_triangles: np.ndarray  # (F', 3)


def subdivide(vertices: torch.Tensor, triangles, uvs, uv_triangles, levels: int) -> Subdivided:
    """Midpoint subdivision, ``levels`` times, of a batch of meshes sharing one topology and UV layout.

    Every triangle becomes four; positions and UVs get their edge midpoints
    separately (UV seams have their own indices), and both splits list the
    new triangles in the same order, so triangle j of each still matches.
    The surface does not move: it gains vertices for a displacement to carry.

    Args:
        vertices: (B, V, 3) any frame; triangles (F, 3) into them.
        uvs: (T, 2); uv_triangles (F, 3) into them.
    """
    b, v = vertices.shape[:2]
    flat = vertices.permute(1, 0, 2).reshape(v, b * 3).cpu().numpy()  # every face's xyz side by side
    tris, uv, uv_tris = (torch.as_tensor(x).cpu().numpy() for x in (triangles, uvs, uv_triangles))
    for _ in range(levels):
        flat, new_tris = trimesh.remesh.subdivide(flat, tris)
        uv, uv_tris = trimesh.remesh.subdivide(uv, uv_tris)
        tris = new_tris
    dense = torch.from_numpy(np.ascontiguousarray(flat)).reshape(-1, b, 3).permute(1, 0, 2)
    return Subdivided(dense.to(vertices), tris, uv, uv_tris)


def seen_in_mask(verts_cam: torch.Tensor, intrinsics: torch.Tensor, mask: torch.Tensor, depth0: torch.Tensor,
                 tolerance_mm: float):
    """(B, V) bool: the vertices (B, V, 3, camera frame, mm) that project into the (B, H, W) ``mask`` with
    their depth within ``tolerance_mm`` of the depth map ``depth0`` (B, H, W, mm) there; and their (B, V, 3)
    ``(u, v, depth)`` and the map's depth there."""
    uvd = camera_to_pixel(verts_cam, intrinsics)
    d_old = sample_at_pixels(depth0[..., None], uvd[..., :2])[..., 0]
    inside = sample_at_pixels(mask[..., None].float(), uvd[..., :2])[..., 0] > 0.999
    return inside & ((d_old - uvd[..., 2]).abs() < tolerance_mm), uvd, d_old


def displace_to_depth(verts_cam: torch.Tensor, intrinsics: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor,
                      tolerance_mm: float, depth0: torch.Tensor,
                      elsewhere: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Move each visible vertex along its camera ray to the detailed depth (:func:`seen_in_mask` against the
    medium depth map ``depth0``); the others go to ``elsewhere`` (B, V, 3; None: they stay)."""
    seen, uvd, d_old = seen_in_mask(verts_cam, intrinsics, mask, depth0, tolerance_mm)
    d_new = sample_at_pixels(depth[..., None], uvd[..., :2])[..., 0]
    target = pixel_to_camera(uvd[..., :2], uvd[..., 2] + (d_new - d_old), intrinsics)
    return torch.where(seen[..., None], target, verts_cam if elsewhere is None else elsewhere)


def detailed_mesh(verts_cam: torch.Tensor, tris, uvs, uv_tris, intrinsics: torch.Tensor, sfs: SfsResult,
                  depth0: torch.Tensor, settings: FineSettings) -> Subdivided:
    """``fine.obj``'s geometry (camera frame, mm): the medium mesh (B, V, 3) subdivided, its vertices seen
    in the SfS mask displaced along their rays to the detailed depth, the rest moved by the carried smooth
    change (:func:`carry_smooth_change`); ``depth0`` (B, H, W) is the medium mesh's depth map."""
    b = verts_cam.shape[0]
    carried = carry_smooth_change(verts_cam, tris, intrinsics, sfs, depth0, settings)
    dense = subdivide(torch.cat([verts_cam, carried]), tris, uvs, uv_tris, settings.displaced_subdivisions)
    displaced = displace_to_depth(dense.vertices[:b], intrinsics, sfs.depth, sfs.mask,
                                  settings.visibility_tolerance_mm, depth0, elsewhere=dense.vertices[b:])
    return dense._replace(vertices=displaced)


def carry_smooth_change(verts_cam: torch.Tensor, tris, intrinsics: torch.Tensor, sfs: SfsResult,
                        depth0: torch.Tensor, settings: FineSettings) -> torch.Tensor:
    """(B, V, 3) camera frame, mm: the medium mesh moved along the camera rays by the SfS's smooth depth
    change, read at the vertices seen in its mask and carried over the rest of the surface
    (FineSettings.carry_mm); the mesh unchanged when there is none."""
    if sfs.smooth_change is None or settings.carry_mm <= 0:
        return verts_cam
    seen, uvd, _ = seen_in_mask(verts_cam, intrinsics, sfs.mask, depth0, settings.visibility_tolerance_mm)
    change = sample_at_pixels(sfs.smooth_change[..., None].to(verts_cam), uvd[..., :2])[..., 0]
    change = carry_over_surface(change, seen, verts_cam, torch.as_tensor(tris, device=verts_cam.device),
                                settings.carry_mm)
    return pixel_to_camera(uvd[..., :2], uvd[..., 2] + change, intrinsics)


SSIM_WINDOW_PX = 7  # skimage's default window for SSIM


def appearance_metrics(image: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor) -> dict:
    """PSNR (dB) and SSIM of the re-rendered face inside the mask (METHOD.md, appearance)."""
    from skimage.metrics import structural_similarity
    m = mask.bool()
    if int(m.sum()) == 0:
        return {"psnr_db": float("nan"), "ssim": float("nan"), "mask_pixels": 0}
    mse = float(((image - rendered.clamp(0, 1)) ** 2)[m].mean())
    psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
    # SSIM on the mask's box grown by half skimage's 7 px window (and a pixel more): every mask pixel's window
    # and the filters' edge handling are the whole image's there, at a tenth of the pixels
    box = grown_mask_box(m[None], SSIM_WINDOW_PX // 2 + 1)
    if min(x.stop - x.start for x in box) < 2 * SSIM_WINDOW_PX:  # a speck of a mask: the whole image
        box = (slice(None), slice(None))
    a, r, mk = (x[box].cpu().numpy() for x in (image, rendered.clamp(0, 1), m))
    _, ssim_map = structural_similarity(a, r, win_size=SSIM_WINDOW_PX, channel_axis=2, data_range=1.0, full=True)
    return {"psnr_db": psnr, "ssim": float(ssim_map.mean(-1)[mk].mean()), "mask_pixels": int(mk.sum())}
