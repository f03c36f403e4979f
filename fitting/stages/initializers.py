"""Learned (or any) networks as optional initialisers of the coarse stage.

An initialiser is a callable ``(image, landmarks, model) -> CoarseInit``:

- ``image``: (S, S, 3) float32 tensor, the face's working crop in [0, 1];
- ``landmarks``: (478, 3) float32 tensor, u, v in crop pixels and MediaPipe's
  relative depth z (pixels, smaller = closer);
- ``model``: the :class:`morphable.MorphableModel` in use;

and returns a :class:`fitting.stages.coarse.CoarseInit` with any of identity and
expression coefficients, pose (rotation (3, 3), translation (3,) mm, model
-> crop camera) and per-vertex albedo (V, 3). The coarse stage starts from
what it returns. Register one with ``@register_initializer("name")`` or, from
another package, through the entry-point group ``facefit.initializers``::

    [options.entry_points]
    facefit.initializers =
        my_net = my_package.module:my_initializer

No initialiser is required: the default starts from the mean face.
"""
from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Callable, Dict, Optional, Union

import torch

if TYPE_CHECKING:
    from .coarse import CoarseInit

ENTRY_POINT_GROUP = "facefit.initializers"
_REGISTRY: Dict[str, Callable] = {}


def register_initializer(name: str):
    """Decorator: make ``fn`` available as ``FaceFitter(initializer=name)`` / ``--initializer name``."""
    def wrap(fn):
        _REGISTRY[name] = fn
        return fn
    return wrap


def available_initializers() -> Dict[str, Callable]:
    found = dict(_REGISTRY)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def resolve_initializer(spec: Union[None, str, Callable]) -> Optional[Callable]:
    if spec is None or callable(spec):
        return spec
    found = available_initializers()
    if spec not in found:
        raise KeyError(f"unknown initializer {spec!r}; available: {', '.join(sorted(found)) or 'none'}")
    fn = found[spec]
    return fn.load() if isinstance(fn, metadata.EntryPoint) else fn


# Ridge on the identity coefficients of the MediaPipe-mesh fit, in mm^2 per unit coefficient
# (summed over ~470 points): MediaPipe's depth is coarse, so a coefficient must explain more than
# about 50 mm^2 of squared point error (0.3 mm per point) before it moves off the mean.
MESH_FIT_RIDGE = 50.0


@register_initializer("mediapipe_mesh")
def mediapipe_mesh_initializer(image: torch.Tensor, landmarks: torch.Tensor, model) -> "CoarseInit":
    """MediaPipe's own 3D face mesh as the shape prior.

    MediaPipe's (u, v, z) points form a 3D mesh in pixel units (x right, y
    down, z away from the camera). Flipped to the model's axes it is fitted by
    a similarity transform and the identity coefficients by ridge regression
    in 3D, which gives a full 3D shape start (depth included) instead of the
    mean face. Returns identity coefficients only; the pose is left to the
    stage's own solve.
    """
    from morphable.geometry import similarity_transform

    from .coarse import CoarseInit
    from .correspondence import load_correspondence
    from .landmark_fit import LandmarkBasis

    corr = load_correspondence()
    valid = corr.valid.clone()
    pts = landmarks.to(model.mean).clone()
    target = torch.stack([pts[:, 0], -pts[:, 1], -pts[:, 2]], -1)[valid]  # pixel axes -> model axes (y up, z out)
    lb = LandmarkBasis.from_model(model, corr.vertex_ids.to(model.device)[valid], corr.bary.to(model.device)[valid],
                                  n_id=model.n_id)
    basis = lb.basis[..., :model.n_id]  # (K, 3, n)
    coeffs = torch.zeros(model.n_id, device=model.device)
    for _ in range(3):
        src = lb.mean + torch.einsum("kcn,n->kc", basis, coeffs)
        scale, rot, shift = similarity_transform(src, target)
        # target ~ scale R (mean + B a) + shift  ->  solve for a in model units.
        local = (torch.einsum("ij,kj->ki", rot.T, target - shift) / scale) - lb.mean
        a = basis.reshape(-1, model.n_id)
        ridge = MESH_FIT_RIDGE * torch.eye(model.n_id, device=a.device)
        coeffs = torch.linalg.solve(a.T @ a + ridge, a.T @ local.reshape(-1))
    return CoarseInit(id_coeffs=coeffs[None].clamp(-3, 3))

