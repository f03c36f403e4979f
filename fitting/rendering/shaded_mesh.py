"""Image formation: Lambertian SH shading with an optional specular term (METHOD.md eq. 4-5).

    I = albedo * S(n) + eps * beta,     S(n) = sum_k r_k Y_k(n)  (per colour channel)

``n`` are unit normals in the CAMERA frame (the light is fixed to the camera);
``r`` are (B, 9, 3) SH coefficients; the band factors of the Lambertian
kernel are applied inside :func:`sfs.sh.sh_irradiance`. Images are float,
[0, 1] nominal (not clamped here, so gradients are not cut).

:func:`render_mesh` chains rasterise -> interpolate -> shade for callers that
just want a picture of a mesh.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fitting.rendering.renderer import Fragments, Renderer
from morphable.geometry import vertex_normals
from sfs.sh import sh_irradiance


def shade(albedo: torch.Tensor, normals: torch.Tensor, sh_coeffs: torch.Tensor,
          specular: Optional[torch.Tensor] = None, eps: float = 1.0) -> torch.Tensor:
    """Eq. 4: ``albedo * S(normals) + eps * specular``.

    ``albedo`` (B, ..., 3) (or (B, ..., 1) grey), ``normals`` (B, ..., 3)
    camera-frame unit vectors, ``sh_coeffs`` (B, 9, 3), ``specular`` (B, ..., 1 or 3)
    or None. Returns (B, ..., 3).
    """
    image = albedo * sh_irradiance(normals, sh_coeffs)
    if specular is not None and eps != 0:
        image = image + eps * specular
    return image


def sh_shading_packed(normals: torch.Tensor, sh_coeffs: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
    """S(n) for packed pixels: ``normals`` (N, 3) camera frame, ``sh_coeffs``
    (B, 9, 3), ``batch_index`` (N,) batch element of each pixel -> (N, 3).

    Packed pixels (``Renderer.interpolate(..., packed=True)``) skip the
    background, which is most of the image on the CPU backend.
    """
    if sh_coeffs.shape[0] == 1:
        return sh_irradiance(normals[None], sh_coeffs)[0]
    return sh_irradiance(normals[:, None], sh_coeffs[batch_index])[:, 0]


@dataclass
class Rendered:
    """Outputs of :func:`render_mesh`, all (B, H, W, C) on the image grid.

    ``image``: shaded colour over ``background``; ``albedo``; ``normals``
    (camera frame, unit where covered, zero elsewhere); ``shading`` (the SH
    irradiance); ``depth`` (B, H, W) mm; ``mask`` (B, H, W) bool; ``frags``.
    """

    image: torch.Tensor
    albedo: torch.Tensor
    normals: torch.Tensor
    shading: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    frags: Fragments


def render_mesh(renderer: Renderer, verts_cam: torch.Tensor, tris: torch.Tensor, intrinsics: torch.Tensor,
                height: int, width: int, sh_coeffs: torch.Tensor, *,
                vertex_albedo: Optional[torch.Tensor] = None, texture: Optional[torch.Tensor] = None,
                uvs: Optional[torch.Tensor] = None, uv_tris: Optional[torch.Tensor] = None,
                normals: Optional[torch.Tensor] = None, background: Optional[torch.Tensor] = None,
                antialias: bool = True) -> Rendered:
    """Render B camera-space meshes with SH lighting.

    ``verts_cam`` (B, V, 3) mm; ``tris`` (F, 3); ``intrinsics`` (B, 4);
    ``sh_coeffs`` (B, 9, 3). Albedo from either ``vertex_albedo`` (B, V, 3) /
    (V, 3), or ``texture`` (B, Ht, Wt, 3) looked up at ``uvs`` (T, 2) through
    ``uv_tris`` (F, 3) (OBJ v-up); default mid grey. ``normals`` (B, V, 3)
    camera-frame vertex normals, default: area-weighted normals of the mesh.
    ``background`` (B, H, W, 3) or (3,) colour, default black.
    """
    frags = renderer.rasterize(verts_cam, tris, intrinsics, height, width)
    if normals is None:
        normals = vertex_normals(verts_cam, tris)
    n = torch.nn.functional.normalize(renderer.interpolate(normals, frags), dim=-1, eps=1e-12)
    if texture is not None:
        uv = renderer.interpolate(uvs, frags, uv_tris if uv_tris is not None else tris)
        albedo = renderer.texture(texture, uv)
    elif vertex_albedo is not None:
        albedo = renderer.interpolate(vertex_albedo, frags)
    else:
        albedo = torch.full_like(n, 0.5)
    mask = frags.mask[..., None]
    albedo = albedo * mask
    shading = sh_irradiance(n, sh_coeffs) * mask
    image = albedo * shading
    if background is not None:
        image = torch.where(mask, image, background.to(image).expand_as(image))
    if antialias:
        image = renderer.antialias(image, frags)
    return Rendered(image, albedo, n, shading, frags.depth, frags.mask, frags)
