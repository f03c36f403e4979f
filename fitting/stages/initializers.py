"""Learned (or any) networks as optional initialisers of the coarse stage.

An initialiser is a callable ``(image, landmarks, model) -> CoarseInit``:

- ``image``: (S, S, 3) float32 tensor, the face's working crop in [0, 1];
- ``landmarks``: (478, 3) float32 tensor, u, v in crop pixels and MediaPipe's
  relative depth z (pixels, smaller = closer);
- ``model``: the :class:`morphable.MorphableModel` in use;

(and, when it has ``needs_intrinsics = True``, ``intrinsics=`` (4,) the crop's ``fx, fy, cx, cy``)
and returns a :class:`fitting.stages.coarse.CoarseInit` with any of identity and
expression coefficients, pose (rotation (3, 3), translation (3,) mm, model
-> crop camera) and per-vertex albedo (V, 3). The coarse stage starts from
what it returns. Register one with ``@register_initializer("name")`` or, from
another package, through the entry-point group ``facefit.initializers``::

    [options.entry_points]
    facefit.initializers =
        my_net = my_package.module:my_initializer

No initialiser is required. Built in: ``mediapipe_mesh`` (MediaPipe's own 3D mesh as the shape prior),
``3ddfa_v2`` (3DDFA_V2's learned regressor as the pose start: optional, non-commercial, its files
fetched on first use, see :mod:`landmarks.regressor_files`) and ``auto`` (the default of
:class:`fitting.FaceFitter`: ``3ddfa_v2`` when its files are already on this machine, else none, i.e.
the mean face and the stage's own pose solve).
"""
from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import TYPE_CHECKING, Callable, Dict, Optional, Union

import numpy as np
import torch

if TYPE_CHECKING:
    from .coarse import CoarseInit

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "facefit.initializers"
AUTO = "auto"
NONE = "none"  # no initialiser: the name the CLI and the benches take for None
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


def resolve_initializer(spec: Union[None, str, Callable],
                        regressor_dir: Union[str, os.PathLike, None] = None) -> Optional[Callable]:
    """The initialiser named ``spec`` (or ``spec`` itself when callable; None or ``"none"``: none).

    ``"auto"``: the 3DDFA_V2 regressor when its files are found without a download (``regressor_dir``,
    ``FACEFIT_3DDFA_DIR`` or the cache), else None. ``regressor_dir``: where the regressor's files
    are, for ``"3ddfa_v2"`` and ``"auto"``. An initialiser with a ``prepare()`` method has it called
    here, so that missing files fail now (one line), not in the middle of a batch.
    """
    if spec is None or spec == NONE:
        return None
    if callable(spec):
        return spec
    if spec == AUTO:
        return _auto_regressor(regressor_dir)
    if spec == RegressorInitializer.name and regressor_dir is not None:
        fn = RegressorInitializer(regressor_dir)
    else:
        found = available_initializers()
        if spec not in found:
            names = sorted([*found, AUTO])
            raise KeyError(f"unknown initializer {spec!r}; available: {', '.join(names)}")
        fn = found[spec]
        fn = fn.load() if isinstance(fn, metadata.EntryPoint) else fn
    if hasattr(fn, "prepare"):
        fn.prepare()
    return fn


def _auto_regressor(folder) -> Optional[Callable]:
    from landmarks.regressor_files import RegressorFilesError, find_regressor_files
    try:
        files = find_regressor_files(folder, download=False)
    except RegressorFilesError as exc:  # present but unusable: say so, and fit as without it
        log.warning("not using the 3DDFA_V2 initialiser: %s", exc)
        return None
    if files is None:
        return None
    fn = RegressorInitializer(files=files)
    fn.prepare()
    return fn


# Ridge on the identity coefficients of the MediaPipe-mesh fit, in mm^2 per unit coefficient
# (summed over ~470 points): MediaPipe's depth is coarse, so a coefficient must explain more than
# about 50 mm^2 of squared point error (0.3 mm per point) before it moves off the mean.
MESH_FIT_RIDGE = 50.0


@register_initializer("mediapipe_mesh")
def mediapipe_mesh_initializer(image: torch.Tensor, landmarks: torch.Tensor, model) -> "CoarseInit":
    """MediaPipe's own 3D face mesh as the shape prior.

    The mesh is the 478 points the landmark step found (MediaPipe's attention
    Face Mesh model, run by :mod:`landmarks.face_mesh`; mediapipe itself is
    not needed). Its (u, v, z) points form a 3D mesh in pixel units (x right, y
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



class RegressorInitializer:
    """3DDFA_V2's learned regressor (:mod:`landmarks.regressor`) as the coarse stage's pose start.

    The regressor reads the working crop (its first crop from the bounding box of MediaPipe's points,
    its second from its own 68 points) and returns the 68 iBUG points in 3D. The model's ``multipie68``
    vertices of the mean face are aligned to them: rotation and scale by a similarity fit in 3D
    (Umeyama), the distance from that scale and the crop's focal length, then a perspective
    refinement on the 68 points' pixels. Where MediaPipe's mesh is wrong (heads turned past about
    60 degrees) this start does not depend on it. Returns the pose and the 68 points (crop pixels), which
    the coarse stage fuses with MediaPipe's (:mod:`fitting.stages.fusion`); no coefficients: the 68
    points' shape is the Basel Face Model's, not the ICT model's.

    ``folder``: where the regressor's files are (else ``FACEFIT_3DDFA_DIR``, the cache, a download);
    ``files``: already found files. Its output is non-commercial (Basel Face Model terms).
    """

    name = "3ddfa_v2"
    needs_intrinsics = True  # the coarse stage passes the crop's intrinsics (4,): a pose in mm needs the focal

    def __init__(self, folder: Union[str, os.PathLike, None] = None, files=None, download: bool = True):
        self.folder, self.files, self.download = folder, files, download
        self.regressor = None

    def prepare(self) -> None:
        """Find (or download) and load the regressor; raises RegressorFilesError (one line)."""
        if self.regressor is not None:
            return
        from landmarks.regressor import FaceRegressor
        from landmarks.regressor_files import RegressorFilesError, find_regressor_files
        files = self.files or find_regressor_files(self.folder, download=self.download)
        if files is None:
            raise RegressorFilesError("the 3DDFA_V2 regressor's files were not found (pass --3ddfa-dir, "
                                      "set FACEFIT_3DDFA_DIR, or allow the download)")
        self.files, self.regressor = files, FaceRegressor(files)

    def read(self, image: torch.Tensor, landmarks: torch.Tensor):
        """The regressor on one working crop: :class:`landmarks.regressor.RegressedFaces` of one face,
        in crop pixels. ``image`` (S, S, 3) in [0, 1], ``landmarks`` (478, >=2) crop pixels."""
        self.prepare()
        uv = landmarks[:, :2].detach().cpu().numpy().astype(np.float64)
        box = np.concatenate([uv.min(0), uv.max(0)])[None]
        return self.regressor(image.detach().cpu().numpy().astype(np.float32), box)

    def __call__(self, image: torch.Tensor, landmarks: torch.Tensor, model, intrinsics: torch.Tensor) -> "CoarseInit":
        from .coarse import CoarseInit
        found = self.read(image, landmarks)
        rot, t = pose_from_points68(model, torch.as_tensor(found.points[0]), intrinsics)
        # the 68 points go on to the coarse stage's fusion with MediaPipe's (fitting.stages.fusion)
        return CoarseInit(rotation=rot, translation=t, points68=torch.as_tensor(found.points[0, :, :2]))

    def batch(self, images: torch.Tensor, landmarks: torch.Tensor, model, intrinsics: torch.Tensor) -> "CoarseInit":
        """:meth:`__call__` on B crops at once: ``images`` (B, S, S, 3) in [0, 1], ``landmarks`` (B, 478, >=2)
        crop pixels, ``intrinsics`` (B, 4). One network call per regressor pass for all B (a video's frames:
        1.2 s per frame on this busy 2-core machine one by one, where the network's small layers pay their
        threads' start every call). Returns one CoarseInit with (B, ...) fields."""
        from .coarse import CoarseInit
        self.prepare()
        uv = landmarks[..., :2].detach().cpu().numpy().astype(np.float64)
        boxes = np.concatenate([uv.min(1), uv.max(1)], -1)[:, None]  # (B, 1, 4)
        imgs = images.detach().cpu().numpy().astype(np.float32)
        found = self.regressor.read_images(list(imgs), boxes)
        points = torch.as_tensor(found.points)  # (B, 68, 3): one face per crop
        rot, t = pose_from_points68(model, points, torch.as_tensor(intrinsics).reshape(-1, 4))
        return CoarseInit(rotation=rot, translation=t, points68=points[..., :2])


# Perspective refinement steps on the 68 points after the similarity start (Levenberg-Marquardt converges
# in a few from there; more change nothing measurable).
POSE68_ITERATIONS = 10


def pose_from_points68(model, points: torch.Tensor, intrinsics: torch.Tensor):
    """Pose (rotation (3, 3), translation (3,) mm; model -> camera) of the model's mean face whose
    ``multipie68`` vertices best match ``points`` (68, 3): pixels u, v (crop) and a relative depth in
    pixels, larger = closer (as :class:`landmarks.regressor.RegressedFaces`). ``intrinsics`` (4,) of
    the crop. Batched: ``points`` (B, 68, 3) and ``intrinsics`` (B, 4) give (B, 3, 3) and (B, 3)."""
    from morphable.geometry import similarity_transform

    from .landmark_fit import refine_pose
    dtype = model.mean.dtype
    single = torch.as_tensor(points).dim() == 2
    # on the CPU whatever the stage's device: 68 points and a 10-step solve, and the regressor's points
    # come from the CPU anyway; the coarse stage moves the pose to its device
    pts = torch.as_tensor(points).detach().cpu().to(dtype).reshape(-1, 68, 3)
    k = torch.as_tensor(intrinsics).detach().cpu().to(dtype).reshape(-1, 4)
    src = model.mean[model.landmark_sets["multipie68"]].detach().cpu().to(dtype)  # (68, 3) mm
    view = torch.stack([pts[..., 0], -pts[..., 1], pts[..., 2]], -1)  # pixels -> x right, y up, z toward the viewer
    scale, rot, _ = similarity_transform(src, view)  # scale: pixels per mm at the face's distance
    depth = k[:, 0] / scale
    centre_uv = pts[..., :2].mean(1)
    centre_cam = torch.stack([(centre_uv[:, 0] - k[:, 2]) / k[:, 0] * depth,
                              -(centre_uv[:, 1] - k[:, 3]) / k[:, 1] * depth, -depth], -1)
    t = centre_cam - rot @ src.mean(0)
    weights = torch.ones(len(pts), len(src), dtype=dtype)
    rot, t = refine_pose(src.expand(len(pts), -1, -1), pts[..., :2], weights, k, rot, t, POSE68_ITERATIONS)
    return (rot[0], t[0]) if single else (rot, t)


register_initializer(RegressorInitializer.name)(RegressorInitializer())
