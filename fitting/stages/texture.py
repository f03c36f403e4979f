"""The fine stage's albedo as a texture in the model's UV layout (the OBJ's ``fine.png``).

:func:`bake_albedo` resamples the image-space albedo into the UV atlas;
only texels whose surface point the photo saw get a colour from it. The
rest (scalp, ears, neck, the far cheek of a turned head, and the atlas
between UV shells) are filled by :func:`fill_unseen`, a pull-push
interpolation, so the colour runs on smoothly from the seen face instead of
jumping to a flat colour at the mask's edge (which showed as a seam round
the face in any viewer).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from morphable.ict import default_cache_dir, read_npz, write_npz
from sfs.projection import camera_to_pixel, sample_at_pixels

from ..rendering.renderer import Fragments, uv_to_texel


def fill_unseen(texture: torch.Tensor, seen: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Fill the texels that are not ``seen`` by pull-push interpolation from those that are.

    Pull: a pyramid of seen-weighted 2x2 means (colour and coverage). Push:
    from the coarsest level down, each level's colour is its own mean blended
    with the upsampled coarser colour by its coverage; at full resolution a
    seen texel has coverage 1 and keeps its colour exactly. Unseen texels get
    a smooth continuation of the nearby seen colours, tending to their
    regional mean far away.

    Args:
        texture: (B, H, W, C) colours; only the seen texels are read.
        seen: (B, H, W) bool.
        fallback: (B, C) colour for a face with no seen texel at all.
    Returns:
        (B, H, W, C), equal to ``texture`` where ``seen``.
    """
    w = seen[:, None].to(texture.dtype)                       # (B, 1, H, W) coverage
    x = texture.permute(0, 3, 1, 2) * w                        # colour premultiplied by coverage
    pyramid = [(x, w)]
    while max(x.shape[-2:]) > 1:  # down to one texel: the mean of all seen texels
        # ceil_mode keeps odd rows/columns; the same divisor hits x and w, so x / w stays a mean
        kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
        x, w = F.avg_pool2d(x, kernel, ceil_mode=True), F.avg_pool2d(w, kernel, ceil_mode=True)
        pyramid.append((x, w))
    x, w = pyramid[-1]
    colour = torch.where(w > 0, x / w.clamp_min(1e-12), fallback[:, :, None, None].to(texture))
    for x, w in reversed(pyramid[1:-1]):
        up = F.interpolate(colour, size=x.shape[-2:], mode="bilinear", align_corners=False)
        own = x / w.clamp_min(1e-12)
        colour = torch.where(w > 0, own * w + up * (1 - w), up)
    # full resolution: coverage is 0 or 1, so the blend is the texture where seen and the upsampled colour
    # elsewhere (the blend there cost as much as the rest of the pyramid)
    up = F.interpolate(colour, size=texture.shape[1:3], mode="bilinear", align_corners=False)
    return torch.where(seen[..., None], texture, up.permute(0, 2, 3, 1))


# The atlas rasterised in UV space is the same for every face and photo of a model, and the rasterisation
# took 0.67 s of a 8.5 s fine stage (1024 x 2048 texels, one thread): the last one made is kept (about 60 MB).
# A fresh `fit-face` process paid it again (two million rays and their arrays: 0.35 s of a 2.9 s fine stage
# on an idle machine, one thread, up to 1 s beside other work), so the CPU backend's fragments are also kept
# on disk beside the model cache (32 MB, read in about 0.05 s); nvdiffrast rasterises the atlas in
# milliseconds and keeps no file.
_atlas_fragments: dict = {}


def atlas_fragments(renderer, atlas_uvs: torch.Tensor, uv_tris: torch.Tensor, height: int, width: int):
    """The UV atlas (``atlas_uvs`` (T, 2) in [0, 1]^2, ``uv_tris`` (F, 3)) rasterised at ``height`` x ``width``
    texels: :meth:`Renderer.rasterize_pixels`'s fragments, made once per atlas, size and renderer kind."""
    digest = hashlib.sha1(atlas_uvs.detach().cpu().numpy().tobytes())
    digest.update(uv_tris.detach().cpu().numpy().tobytes())
    key = (renderer.backend, str(renderer.device), height, width, digest.hexdigest())
    if key not in _atlas_fragments:
        _atlas_fragments.clear()
        on_disk = None
        if renderer.backend == "cpu":
            on_disk = default_cache_dir() / f"uv-atlas-{height}x{width}-{key[-1][:16]}.npz"
        frags = _read_atlas(on_disk, uv_tris, height, width) if on_disk is not None else None
        if frags is None:
            frags = renderer.rasterize_pixels(uv_to_texel(atlas_uvs, height, width)[None], uv_tris, height, width)
            if on_disk is not None:
                _write_atlas(on_disk, frags)
        _atlas_fragments[key] = frags
    return _atlas_fragments[key]


_ATLAS_ARRAYS = ("tri_id", "pix", "pix_tri", "pix_bary", "pix_depth")


def _read_atlas(path: Path, uv_tris: torch.Tensor, height: int, width: int):
    """The CPU fragments kept by :func:`_write_atlas`, or None when the file is missing, unreadable or not
    this atlas's."""
    z = read_npz(path, "UV atlas cache") if path.is_file() else None
    if z is None or not set(_ATLAS_ARRAYS) <= z.keys():
        return None
    tri_id, pix, pix_tri = (torch.from_numpy(z[n].astype(np.int64)) for n in _ATLAS_ARRAYS[:3])
    bary, depth = torch.from_numpy(z["pix_bary"]), torch.from_numpy(z["pix_depth"])
    if tri_id.shape != (1, height, width) or bary.shape != (pix.shape[0], 3):
        return None
    return Fragments(tri_id, uv_tris.to(torch.int64), pix=pix, pix_tri=pix_tri, pix_bary=bary, pix_depth=depth)


def _write_atlas(path: Path, frags) -> None:
    """Keep the CPU fragments on disk (indices as int32: the atlas has fewer than 2**31 texels)."""
    write_npz(path, dict(tri_id=frags.tri_id.cpu().numpy().astype(np.int32),
                         pix=frags.pixels.cpu().numpy().astype(np.int32),
                         pix_tri=frags.pix_tri.cpu().numpy().astype(np.int32),
                         pix_bary=frags.pix_bary.detach().cpu().numpy(),
                         pix_depth=frags.pix_depth.detach().cpu().numpy()), "UV atlas cache")


def bake_albedo(renderer, verts_cam, tris, atlas_uvs, uv_tris, intrinsics, albedo, depth, mask, height: int,
                tiles: int, tolerance_mm: float) -> torch.Tensor:
    """The image-space albedo resampled into the UV atlas: (B, height, tiles * height, 3).

    Each texel's surface point is found by rasterising the mesh in UV space;
    texels whose point is seen in the photo (inside ``mask``, depth within
    ``tolerance_mm`` of ``depth``) take the albedo there; the rest are filled
    by :func:`fill_unseen`.

    Args:
        verts_cam: (B, V, 3) mm, camera frame; tris (F, 3) into them.
        atlas_uvs: (T, 2) in [0, 1]^2 over the whole atlas; uv_tris (F, 3) into them.
        intrinsics: (B, 4) crop pixels; albedo (B, S, S, 3), depth (B, S, S) mm, mask (B, S, S).
    """
    b = verts_cam.shape[0]
    width = tiles * height
    # One UV "vertex" per (triangle corner): rasterise uv_tris, interpolate positions through tris.
    # The atlas is every face's: rasterised once, each face's positions interpolated on it.
    frags = atlas_fragments(renderer, atlas_uvs, uv_tris, height, width)
    pos = torch.cat([renderer.interpolate(verts_cam[i], frags, tris) for i in range(b)])  # (B, Ht, Wt, 3) camera
    flat = pos.reshape(b, -1, 3)
    uvd = camera_to_pixel(flat, intrinsics)
    col = sample_at_pixels(albedo, uvd[..., :2])
    d_map = sample_at_pixels(depth[..., None], uvd[..., :2])[..., 0]
    inside = sample_at_pixels(mask[..., None].float(), uvd[..., :2])[..., 0] > 0.999
    seen = inside & ((d_map - uvd[..., 2]).abs() < tolerance_mm) & frags.mask.reshape(1, -1)
    mean = (albedo * mask[..., None]).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)[:, None]
    filled = fill_unseen(col.reshape(b, height, width, 3), seen.reshape(b, height, width), mean)
    return filled.clamp(0, 1)

