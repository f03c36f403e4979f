"""Image-space shape from shading: pure, batched torch on (B, ...) image tensors; no mesh, no model.

Public API::

    sh_basis, sh_irradiance, default_frontal_light, render_sh   (sfs.sh)
    depth_to_normals                                             (sfs.normals)
    estimate_sh_light                                            (sfs.light)
    rtv                                                          (sfs.rtv)
    non_skin_pixels, hair_pixels, brow_pixels                    (sfs.skin)
    SfsSettings, SfsResult, refine_depth                       (sfs.refine)
"""
from .light import estimate_sh_light
from .normals import depth_to_normals
from .refine import SfsResult, SfsSettings, refine_depth
from .rtv import rtv
from .sh import default_frontal_light, render_sh, sh_basis, sh_irradiance
from .skin import brow_pixels, hair_pixels, non_skin_pixels

__all__ = ["sh_basis", "sh_irradiance", "default_frontal_light", "render_sh", "depth_to_normals",
           "estimate_sh_light", "rtv", "non_skin_pixels", "hair_pixels", "brow_pixels", "SfsSettings",
           "SfsResult", "refine_depth"]
