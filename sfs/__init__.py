"""Image-space shape from shading: pure, batched torch on (B, ...) image tensors; no mesh, no model.

Public API::

    sh_basis, sh_irradiance, default_frontal_light, render_sh   (sfs.sh)
    depth_to_normals                                             (sfs.normals)
    estimate_sh_light                                            (sfs.light)
    rtv                                                          (sfs.rtv)
    non_skin_pixels, hair_pixels, brow_pixels                    (sfs.skin)
    SfsSettings, SfsResult, refine_depth                         (sfs.refine)
"""
from .light import estimate_sh_light
from .normals import depth_to_normals
from .rtv import rtv
from .sh import default_frontal_light, render_sh, sh_basis, sh_irradiance

# The fine stage's solver and masks load on first use: the coarse stage reads sfs.projection,
# sfs.light and sfs.sh, and importing any of them runs this file. (rtv stays eager: the
# function shares its submodule's name, which a lazy import would rebind to the module.)
_LAZY = {"non_skin_pixels": "skin", "hair_pixels": "skin", "brow_pixels": "skin",
         "SfsSettings": "refine", "SfsResult": "refine", "refine_depth": "refine"}

__all__ = ["sh_basis", "sh_irradiance", "default_frontal_light", "render_sh", "depth_to_normals",
           "estimate_sh_light", "rtv", "non_skin_pixels", "hair_pixels", "brow_pixels", "SfsSettings",
           "SfsResult", "refine_depth"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
