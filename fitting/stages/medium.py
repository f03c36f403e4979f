"""Medium stage: pull the coarse mesh onto the detected landmarks by Laplacian deformation.

METHOD.md, "Medium stage" (eq. 2, 3). Given the coarse fit in camera space, the
478 detected MediaPipe landmarks (pixels) and a correspondence from landmarks to
points on the mesh surface (a triangle and barycentrics per landmark), each
landmark's target mu_k is its detected pixel back-projected at the current
depth of its surface point; eq. 3 is then one sparse least-squares solve
(:mod:`fitting.stages.laplacian`). The target depths are re-linearised a few times
(``MediumSettings.iterations``), reusing the factorisation.

Frames and units: camera space in mm (+x right, +y up, looking down -z,
:mod:`sfs.projection`), pixels (u right, v down). The uniform Laplacian commutes
with rigid motion, so deforming in camera space is the same as deforming in the
model frame; callers map the result back with the camera's inverse rigid
transform.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Optional

import numpy as np
import scipy.sparse as sp
import torch

from .laplacian import DeformSolver, InfluenceSolver, anchor_matrix, uniform_laplacian
from morphable.geometry import face_normals, vertex_normals
from sfs.projection import camera_to_pixel, pixel_to_camera

from ..camera import Camera
from .context import Stage

if TYPE_CHECKING:
    from .coarse import CoarseResult
    from .context import FitContext

__all__ = ["MediumSettings", "MediumResult", "Deformation", "run", "landmark_targets", "index_map_correspondence",
           "deform_to_landmarks", "medium_fixed_vertices", "count_flipped_triangles", "max_laplacian_change",
           "unfold_flips"]

CORRESPONDENCES = ("table", "index_map")
# Flip guard: what is left of a landmark's weight near a flipped triangle after each guard round.
FLIP_GUARD_WEIGHT_FACTOR = 0.25
# Unfolding: the share of the displacement a flipped triangle's vertices give up per round, and
# over how many rings of neighbours that shrinking fades out (a step would itself be a spike of
# the Laplacian; six rings span about 6 mm of the ICT face, a corner of the lips or eyes).
UNFOLD_SHRINK = 0.25
UNFOLD_SPREAD_RINGS = 6
# Faces that share a correspondence go through the landmarks' influence fields
# (fitting.stages.laplacian.InfluenceSolver: the same minimiser, one (K, K) solve per face) once this
# process has this many of them to deform (this batch and the ones before): building the fields costs
# about as much as this many faces' own factorisations (1.4 s vs 0.11 s each, 9409-vertex ICT face,
# this 2-core machine). Once built they are kept for the process (a video's frames, later batches).
INFLUENCE_MIN_FACES = 12
_influence_cache: Dict[bytes, InfluenceSolver] = {}
_faces_factorised: Dict[bytes, int] = {}


def _default_group_weights() -> Dict[str, float]:
    # Which landmark groups carry shape after the coarse fit, measured on 40 synthetic faces with known
    # truth (seed 7, out-of-model deformation on, |yaw| <= 45; not the bench's seed 0): the correlation
    # between the residual the medium stage sees (MediaPipe's point, offsets taken out, minus the coarse
    # surface point's projection) and the true offset (the true surface point's projection minus the
    # coarse one, a 2D affine taken out), per group: eyes +0.07, brows +0.11, mouth +0.14, nose -0.07,
    # contour -0.03, other -0.06 (all -0.03; `tools/medium_residual_info.py` reproduces these; on only 8
    # faces eyes and brows come out at -0.08 / -0.05, so their small values are near the noise).
    # MediaPipe's own per-face error (3.1 px per axis RMS in the 512 px crop, 0.85 px of it the mean
    # bias the offsets model) is a smooth field as large as the
    # true offsets, so a residual that does not correlate with the truth is detector error: those
    # groups get 0 (the paper's 0.6 nose / 0.05 contour / 0.1 other bent the whole face toward it;
    # with them and the prior below, bench scan was still +0.02 mm over coarse, textured yaw 0).
    # The others are in proportion to their Wiener gain b / (1 - b), b = cov(residual, truth) /
    # var(residual): eyes 0.15, brows 0.22, mouth 0.25 -> 0.18 : 0.28 : 0.33, the mouth at the paper's 0.1.
    # With the prior below that removes 3 / 11 / 7 % of those groups' residual (synthetic, 40 faces),
    # less than the Wiener share. Weights that remove exactly it (eyes 0.5, brows 0.2, mouth 0.6:
    # 15 / 22 / 26 %) give the same synthetic shape (-0.04 % against coarse, -0.02 % with these) and
    # bench scan medium - coarse at most +0.004 mm (+0.002 with these): the residual's shape content
    # is so small (correlation <= 0.14) that either scale is a near no-op on the shape; the smaller
    # one is kept, as the expected gain from moving further is below 1 % of the residual's variance.
    return {
        "eyes": 0.055,
        "nose": 0.0,
        # The iris points sit on the eyeball, which the ICT face region does not contain and
        # which rotates independently of the eyelids; the nearest skin surface under them is
        # the lid or a hole, so they get no weight.
        "iris": 0.0,
        "brows": 0.085,
        "mouth": 0.1,
        "contour": 0.0,
        "other": 0.0,
    }


@dataclass
class MediumSettings:
    """Every setting of the medium stage; the landmark weights and the displacement prior are
    measured (comments at each), the rest are the paper's.

    Weights are dimensionless: eq. 3 adds ``w_k ||S_k v' - mu_k||^2`` (mm^2) to
    the Laplacian energy ``||L v' - L v||^2`` (mm^2), so ``w_k`` is the price of
    1 mm of landmark error relative to 1 mm of change of a vertex's Laplacian
    coordinate (its offset from the mean of its neighbours); the displacement
    prior ``alpha ||v' - v||^2`` is priced the same way (:attr:`alpha`).

    - ``group_weights``: per landmark group (:data:`landmarks.indices.GROUP_NAMES`).
    - ``weight_scale``: global multiplier on every landmark weight. With the
      displacement prior off, a smooth displacement's Laplacian energy is tiny and
      any scale meets the landmarks almost exactly (1.0 removes > 90 % of the
      reprojection error); with it on, the scale trades landmarks against the prior.
    - ``fix_rigid``: hold ICT's "rigid" vertices in place (hard constraints),
      see :func:`medium_fixed_vertices`.
    - ``correspondence``: how the caller maps landmarks to the surface:
      ``"table"`` (a fixed landmark -> triangle/barycentric table) or
      ``"index_map"`` (read the rendered triangle-id / barycentric maps under
      each landmark pixel, :func:`index_map_correspondence`). Read on the
      mesh being deformed, the index map names the surface point that
      already projects onto each landmark, so by itself it moves nothing
      (measured: landmark error unchanged); it is the paper's tool for
      re-deriving a correspondence at another state, and the table is the
      default.
    - ``iterations``: solves, each re-back-projecting the landmarks at the depth
      of their surface point on the previous solution (>= 1).
    """

    group_weights: Dict[str, float] = field(default_factory=_default_group_weights)
    weight_scale: float = 1.0
    fix_rigid: bool = False
    correspondence: str = "table"
    # Flip guard: after a solve, landmarks within flip_guard_radius_mm (mm, on
    # the coarse mesh) of a triangle that turned inside out get a quarter of
    # their weight and the solve is repeated, at most flip_guard_rounds times.
    flip_guard_rounds: int = 3
    flip_guard_radius_mm: float = 12.0
    # Unfolding, after the guard (fitting.stages.medium.unfold_flips): the displacement
    # (medium - coarse) around any triangle still inside out shrinks by a
    # quarter per round, at most unfold_rounds rounds (0.75^30 ~ 2e-4: the
    # coarse mesh there, which has no flip by definition). Measured on the
    # shared photos and the astronaut: 0-42 tiny triangles at lip/eye corners
    # need it; 0 remain; largest Laplacian change 0.63 mm (0.46 without).
    unfold_rounds: int = 30
    iterations: int = 2
    # Each landmark's weight times (n . v) ** facing_power, n the coarse surface's normal at its
    # point and v the direction to the camera (0 facing away). A landmark constrains the surface
    # where the surface faces the camera; near the silhouette (the far cheek and temple, the far
    # eye's corner on a turned head) one pixel of detector error back-projected at the current
    # depth is a large move across the surface, and eq. 3 carves it in. 0: off. Measured with
    # `bench scan`, uniform look (scan-to-mesh RMSE; coarse 1.28 / 1.71 mm): medium at yaw 40
    # 1.96 -> 1.58 mm (power 2; 1.39 with power 4, which loses on the textured look: 1.95 mm at
    # yaw 60 against 1.85), at yaw 60 2.05 -> 1.77 mm, at yaw 0-20 within 0.02 mm. Synthetic
    # `bench medium` (20 faces): medium vs coarse +5.1 % -> +3.4 %; with exact landmarks the gain
    # falls from -10.5 % to -4.5 % (faces up to 45 degrees: their far side now counts less).
    facing_power: float = 2.0
    # Displacement prior (MAP form of eq. 3): the medium displacement d = v' - v has a Gaussian prior
    # of precision L^T L / laplacian_prior_mm^2 + I / displacement_prior_mm^2 (per axis), i.e. eq. 3
    # (times laplacian_prior_mm^2) gains alpha ||v' - v||^2, alpha = (laplacian_prior_mm /
    # displacement_prior_mm)^2 = 0.030. Without it a smooth warp costs nothing, so any landmark weight,
    # however small (the fusion's trust 0.05 at yaw 60), is met exactly by bending the whole face.
    # laplacian_prior_mm: the RMS Laplacian coordinate per axis of the coarse fit's error, maximum
    # likelihood on the 40 synthetic faces above (0.109 mm). displacement_prior_mm: the size of the
    # out-of-model shape the stage is for, the RMS per axis of the synthetic generator's out-of-model
    # fields (200 draws: 0.634 mm). inf: off (eq. 3 alone). Measured (with the weights above):
    # bench scan medium - coarse at most +0.002 mm over both looks, yaws 0-60, with and without the
    # regressor (+0.46 mm before); synthetic (40 faces) mean error -0.0 % (+3.3 % before).
    displacement_prior_mm: float = 0.634
    laplacian_prior_mm: float = 0.109

    def __post_init__(self):
        if self.correspondence not in CORRESPONDENCES:
            raise ValueError(f"correspondence must be one of {CORRESPONDENCES}, got {self.correspondence!r}")
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if self.weight_scale < 0 or any(w < 0 for w in self.group_weights.values()):
            raise ValueError("landmark weights must be >= 0")

    @property
    def alpha(self) -> float:
        """alpha of :class:`fitting.stages.laplacian.DeformSolver`: (laplacian_prior_mm / displacement_prior_mm)^2."""
        if not (self.displacement_prior_mm > 0) or not np.isfinite(self.displacement_prior_mm):
            return 0.0
        return (self.laplacian_prior_mm / self.displacement_prior_mm) ** 2

    def landmark_weights(self) -> np.ndarray:
        """(478,) float32 per-landmark weights from ``group_weights`` (``weight_scale`` not applied)."""
        from landmarks.indices import GROUP_NAMES, group_weights
        missing = set(GROUP_NAMES) - set(self.group_weights)
        if missing:
            raise KeyError(f"group_weights lacks {sorted(missing)}")
        return group_weights(self.group_weights)


@dataclass
class Deformation:
    """Output of :func:`deform_to_landmarks`.

    - ``vertices_cam``: (B, V, 3) deformed vertices, camera space, mm (dtype of the input).
    - ``reprojection_before`` / ``reprojection_after``: (B,) mean pixel distance
      between the detected landmarks and the projection of their surface points,
      over the landmarks used (valid correspondence and weight > 0).
    - ``max_laplacian_change``: (B,) largest ``|L v' - L v|`` over vertices, mm.
    - ``n_landmarks``: (B,) landmarks used.
    - ``seconds``: wall time of the whole call.
    """

    vertices_cam: torch.Tensor
    reprojection_before: torch.Tensor
    reprojection_after: torch.Tensor
    max_laplacian_change: torch.Tensor
    n_landmarks: torch.Tensor
    seconds: float


def landmark_targets(uv: torch.Tensor, current_points_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Targets mu_k of eq. 3: detected pixels back-projected at their surface point's current depth.

    ``uv`` (B, K, 2) detected landmark pixels; ``current_points_cam`` (B, K, 3)
    camera-space mm positions of the corresponding surface points;
    ``intrinsics`` (B, 4) ``(fx, fy, cx, cy)``. Returns (B, K, 3) camera-space mm
    points that project exactly to ``uv`` and have the depth of the current point.
    """
    depth = camera_to_pixel(current_points_cam, intrinsics)[..., 2]
    return pixel_to_camera(uv.to(current_points_cam.dtype), depth, intrinsics.to(current_points_cam.dtype))


def index_map_correspondence(tri_id: torch.Tensor, bary: torch.Tensor, uv: torch.Tensor):
    """Landmark -> surface correspondence read from rendered triangle-id / barycentric maps.

    ``tri_id`` (B, H, W) int64 triangle index per pixel, -1 for background;
    ``bary`` (B, H, W, 3) barycentrics of that triangle's corners; ``uv``
    (B, K, 2) landmark pixels. Each landmark reads the pixel that contains it
    (pixel ``[row, col]`` covers ``[col, col+1) x [row, row+1)``, so
    ``col = floor(u)``, ``row = floor(v)``).

    Returns ``tri`` (B, K) int64 (-1 where invalid), ``bary`` (B, K, 3) (zeros
    where invalid) and ``valid`` (B, K) bool: False on background, outside the
    image or for a non-finite ``uv``.
    """
    b, h, w = tri_id.shape
    k = uv.shape[1]
    finite = torch.isfinite(uv).all(-1)
    uvs = torch.where(finite[..., None], uv, torch.full_like(uv, -1.0))
    col = torch.floor(uvs[..., 0]).long()
    row = torch.floor(uvs[..., 1]).long()
    inside = finite & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))                        # (B, K)
    tri = torch.gather(tri_id.reshape(b, h * w).long(), 1, flat)
    bc = torch.gather(bary.reshape(b, h * w, 3), 1, flat[..., None].expand(b, k, 3))
    valid = inside & (tri >= 0)
    tri = torch.where(valid, tri, torch.full_like(tri, -1))
    bc = torch.where(valid[..., None], bc, torch.zeros_like(bc))
    return tri, bc, valid


def medium_fixed_vertices(model, settings: MediumSettings) -> Optional[torch.Tensor]:
    """The vertex indices to pass as ``fixed_vertices`` to :func:`deform_to_landmarks`, or None.

    With ``settings.fix_rigid``: ICT's ``vertex_sets["rigid"]`` minus those in
    the ``"face_narrow"`` region. In the ICT face region the rigid set has 24
    vertices: 20 along the back of the jaw / neck below the ears (z < -10 mm,
    far behind the face) and 4 on the chin (x ~ 0, y ~ -80 mm, z ~ 93 mm), in
    the narrow face, where contour and mouth landmarks pull; fixing those would
    fight the landmarks, so they are left free.
    """
    if not settings.fix_rigid:
        return None
    rigid = model.vertex_sets.get("rigid")
    if rigid is None or rigid.numel() == 0:
        return None
    face = model.vertex_sets.get("face_narrow")
    if face is not None and face.numel():
        rigid = rigid[~torch.isin(rigid, face)]
    return rigid.long()


def _batched(x, b: int, tail: int) -> np.ndarray:
    """Broadcast a (..., ) array with ``tail`` trailing dims to a leading batch of b."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == tail:
        a = np.broadcast_to(a, (b,) + a.shape)
    if a.shape[0] != b:
        raise ValueError(f"batch size {a.shape[0]} does not match {b}")
    return a


def _reprojection(points: torch.Tensor, uv: torch.Tensor, k: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    d = (camera_to_pixel(points, k)[..., :2] - uv).norm(dim=-1)
    d = torch.where(used, d, torch.zeros_like(d))
    return d.sum(-1) / used.sum(-1).clamp(min=1)


def deform_to_landmarks(vertices_cam: torch.Tensor, triangles, intrinsics: torch.Tensor, landmarks_uv: torch.Tensor,
               corr_tri, corr_bary, landmark_weights=None, settings: Optional[MediumSettings] = None,
               fixed_vertices=None) -> Deformation:
    """The medium stage for a batch of faces.

    Args:
        vertices_cam: (B, V, 3) coarse mesh, camera space, mm.
        triangles: (F, 3) int vertex indices (shared topology).
        intrinsics: (B, 4) ``(fx, fy, cx, cy)`` pixels.
        landmarks_uv: (B, K, 2) detected landmark pixels (non-finite = missing).
        corr_tri: (B, K) or (K,) int triangle per landmark, -1 = none.
        corr_bary: (B, K, 3) or (K, 3) barycentrics in that triangle.
        landmark_weights: (B, K) or (K,) weights; None = ``settings.landmark_weights()``
            (needs K = 478). ``settings.weight_scale`` multiplies them either way.
        settings: :class:`MediumSettings` (defaults if None).
        fixed_vertices: optional (M,) vertex indices kept exactly in place
            (e.g. :func:`medium_fixed_vertices`).

    Returns a :class:`Deformation`. With the displacement prior, no fixed vertices and one
    correspondence for the batch, once the process has INFLUENCE_MIN_FACES faces to deform with that
    correspondence the batch goes through the landmarks' influence fields (:class:`InfluenceSolver`),
    one (K, K) solve per face; before that (a single photo) one factorisation per face, reused across ``settings.iterations``
    and across consecutive faces that share correspondence and weights. Both give the same minimiser.
    """
    t0 = time.perf_counter()
    settings = settings or MediumSettings()
    if vertices_cam.ndim != 3 or vertices_cam.shape[-1] != 3:
        raise ValueError(f"vertices_cam must be (B, V, 3), got {tuple(vertices_cam.shape)}")
    b, n, _ = vertices_cam.shape
    k = landmarks_uv.shape[1]
    kint = intrinsics.detach().to(torch.float64).cpu()
    uv = landmarks_uv.detach().to(torch.float64).cpu()
    tris = triangles.detach().cpu().numpy() if isinstance(triangles, torch.Tensor) else np.asarray(triangles)
    if landmark_weights is None:
        landmark_weights = settings.landmark_weights()
    w_all = _batched(landmark_weights, b, 1).astype(np.float64) * settings.weight_scale
    tri_all = _batched(corr_tri, b, 1).astype(np.int64)
    bary_all = _batched(corr_bary, b, 2).astype(np.float64)
    if w_all.shape[1] != k or tri_all.shape[1] != k or bary_all.shape[1] != k:
        raise ValueError(f"{k} landmarks but correspondence/weights for {tri_all.shape[1]}/{w_all.shape[1]}")
    finite_uv = torch.isfinite(uv).all(-1).numpy()
    used = (tri_all >= 0) & (w_all > 0) & finite_uv                              # (B, K)
    w_all = np.where(used, w_all, 0.0)
    uv_safe = torch.where(torch.from_numpy(used)[..., None], uv, torch.zeros_like(uv))

    L = uniform_laplacian(tris, n)
    LtL = sp.csr_matrix(L.T @ L)
    ring = sp.csr_matrix((L != 0).astype(np.float64))  # vertex + its edge neighbours
    v0 = vertices_cam.detach().to(torch.float64).cpu().numpy()
    influence = _influence_solver(L, LtL, tris, tri_all, bary_all, settings.alpha, fixed_vertices)
    if influence is not None:
        out = _deform_with_influence(influence, v0, tris, uv_safe, kint, w_all, settings)
        S_list = [influence.S] * b
    else:
        out, S_list = _deform_one_by_one(L, LtL, v0, tris, uv_safe, kint, tri_all, bary_all, w_all, settings,
                                         fixed_vertices)
    if settings.unfold_rounds > 0:
        for i in range(b):
            out[i] = unfold_flips(v0[i], out[i], tris, ring, settings.unfold_rounds)

    used_t = torch.from_numpy(used)
    before = torch.from_numpy(np.stack([S_list[i] @ v0[i] for i in range(b)]))
    after = torch.from_numpy(np.stack([S_list[i] @ out[i] for i in range(b)]))
    result = Deformation(
        vertices_cam=torch.from_numpy(out).to(dtype=vertices_cam.dtype, device=vertices_cam.device),
        reprojection_before=_reprojection(before, uv_safe, kint, used_t),
        reprojection_after=_reprojection(after, uv_safe, kint, used_t),
        max_laplacian_change=torch.tensor([float(np.linalg.norm(L @ (out[i] - v0[i]), axis=1).max())
                                           for i in range(b)], dtype=torch.float64),
        n_landmarks=used_t.sum(-1),
        seconds=0.0,
    )
    result.seconds = time.perf_counter() - t0
    return result


def _influence_solver(L, LtL, tris, tri_all, bary_all, alpha, fixed_vertices) -> Optional[InfluenceSolver]:
    """The influence fields for this batch (built, or kept from an earlier call), or None where a
    factorisation per face is the way: fixed vertices, no displacement prior, per-face correspondence, or
    fewer than INFLUENCE_MIN_FACES faces so far."""
    b = tri_all.shape[0]
    if fixed_vertices is not None or not alpha > 0:
        return None
    if not (tri_all == tri_all[:1]).all() or not (bary_all == bary_all[:1]).all():
        return None
    digest = hashlib.blake2b(digest_size=16)
    for part in (np.int64(L.shape[0]), np.float64(alpha), np.ascontiguousarray(tris, np.int64),
                 np.ascontiguousarray(tri_all[0]), np.ascontiguousarray(bary_all[0])):
        digest.update(np.asarray(part).tobytes())
    key = digest.digest()
    solver = _influence_cache.get(key)  # a local reference: another thread may swap the cache meanwhile
    if solver is None:
        if _faces_factorised.get(key, 0) + b < INFLUENCE_MIN_FACES:
            _faces_factorised[key] = _faces_factorised.get(key, 0) + b
            return None
        solver = InfluenceSolver(L, anchor_matrix(tri_all[0], bary_all[0], tris, L.shape[0]), alpha, LtL=LtL)
        _influence_cache.clear()  # one model and table at a time: 36 MB for the ICT face
        _influence_cache[key] = solver
    return solver


def _near_flips(v0: np.ndarray, after: np.ndarray, tris: np.ndarray, points0: np.ndarray, w: np.ndarray,
                radius_mm: float) -> np.ndarray:
    """(K,) bool: the weighted landmarks whose surface points ``points0`` (K, 3) on ``v0`` lie within
    ``radius_mm`` of a triangle that ``after`` turned inside out (the flip guard's; all False where nothing
    flipped)."""
    flipped = _flipped_mask(v0, after, tris)
    if not flipped.any():
        return np.zeros(len(w), bool)
    centres = v0[tris[flipped]].mean(1)
    near = (np.linalg.norm(points0[:, None] - centres[None], axis=-1) < radius_mm).any(1)
    return near & (w > 0)


def _deform_with_influence(solver: InfluenceSolver, v0: np.ndarray, tris: np.ndarray, uv: torch.Tensor,
                           kint: torch.Tensor, w_all: np.ndarray, settings: MediumSettings) -> np.ndarray:
    """The whole batch through the influence fields: (B, V, 3) float64 camera mm, before unfolding."""
    S = solver.S
    b, n, _ = v0.shape
    k = S.shape[0]

    def surface_points(v: np.ndarray) -> np.ndarray:  # (b, V, 3) -> (b, K, 3)
        return (S @ v.transpose(1, 0, 2).reshape(n, -1)).reshape(k, len(v), 3).transpose(1, 0, 2)

    base = surface_points(v0)

    def solve(idx: np.ndarray, w: np.ndarray) -> np.ndarray:
        cur = v0[idx]
        for _ in range(settings.iterations):
            mu = landmark_targets(uv[idx], torch.from_numpy(surface_points(cur)), kint[idx]).numpy()
            cur = v0[idx] + solver.displacement(w, mu - base[idx])
        return cur

    w = w_all.copy()
    out = solve(np.arange(b), w)
    redo = np.arange(b)
    for _ in range(settings.flip_guard_rounds):
        # Landmarks pulling a fold (inner lips, eye corners) inside out: weaken those near the flipped
        # triangles and solve again (the faces with such landmarks only).
        near = {int(i): _near_flips(v0[i], out[i], tris, base[i], w[i], settings.flip_guard_radius_mm) for i in redo}
        redo = np.array([i for i, m in near.items() if m.any()], dtype=np.int64)
        if not redo.size:
            break
        for i in redo:
            w[i] = np.where(near[int(i)], w[i] * FLIP_GUARD_WEIGHT_FACTOR, w[i])
        out[redo] = solve(redo, w[redo])
    return out


def _deform_one_by_one(L, LtL, v0, tris, uv_safe, kint, tri_all, bary_all, w_all, settings, fixed_vertices):
    """Each face through its own factorisation (reused by consecutive faces with the same
    correspondence and weights): (B, V, 3) float64 before unfolding, and each face's anchor matrix."""
    b, n, _ = v0.shape
    out = np.empty_like(v0)
    solver, key = None, None
    S_list = []
    for i in range(b):
        this = (tri_all[i], bary_all[i], w_all[i])
        if solver is None or not all(np.array_equal(a, c) for a, c in zip(key, this)):
            S = anchor_matrix(tri_all[i], bary_all[i], tris, n)
            solver = DeformSolver(L, S, w_all[i], fixed_vertices, LtL=LtL, alpha=settings.alpha)
            key = this
        w_i = w_all[i]
        for guard in range(settings.flip_guard_rounds + 1):
            cur = v0[i]
            for _ in range(settings.iterations):
                pts = torch.from_numpy(solver.S @ cur)[None]
                mu = landmark_targets(uv_safe[i:i + 1], pts, kint[i:i + 1])[0].numpy()
                cur = solver.solve(v0[i], mu)
            if guard == settings.flip_guard_rounds:
                break
            # Landmarks pulling a fold (inner lips, eye corners) inside out: weaken
            # those near the flipped triangles and solve again.
            near = _near_flips(v0[i], cur, tris, solver.S @ v0[i], w_i, settings.flip_guard_radius_mm)
            if not near.any():
                break
            w_i = np.where(near, w_i * FLIP_GUARD_WEIGHT_FACTOR, w_i)
            solver = DeformSolver(L, solver.S, w_i, fixed_vertices, LtL=LtL, alpha=settings.alpha)
            key = (tri_all[i], bary_all[i], w_i)
        S_list.append(solver.S)
        out[i] = cur
    return out, S_list


@dataclass
class MediumResult:
    """What the medium stage hands on: ``camera`` (the coarse fit's, unchanged), ``vertices``
    (B, V, 3) model frame, mm, and the deformation's measures: ``max_laplacian_change`` (B,) mm,
    ``landmark_error_before`` / ``landmark_error_after`` (B,) crop px (surface points of the used
    landmarks against their targets, see :class:`Deformation`)."""

    camera: Camera
    vertices: torch.Tensor
    max_laplacian_change: torch.Tensor
    landmark_error_before: torch.Tensor
    landmark_error_after: torch.Tensor


def run(context: "FitContext", batch, previous: "CoarseResult") -> MediumResult:
    """The medium stage (eq. 2-3) on the coarse meshes of a batch, in the camera frame (the uniform
    Laplacian commutes with the rigid transform); returns model-frame vertices."""
    from .correspondence import triangle_barycentrics, triangle_ids
    settings: MediumSettings = context.settings["medium"]
    model, corr, camera = context.model, context.correspondence, previous.camera
    tris = model.triangles
    w = torch.as_tensor(settings.landmark_weights()).to(batch.uv) * corr.valid.to(batch.uv)
    trust = getattr(previous, "landmark_trust", None)
    # MediaPipe's weight against the regressor in the coarse fit (fitting.stages.fusion). It is a real
    # weight only with the displacement prior: eq. 3 alone met the scan's yaw-60 points at trust 0.05 too.
    if trust is not None:
        w = w * trust.to(w)[:, None]
    verts_cam = camera.to_camera(previous.vertices)
    uv = previous.surface_uv(corr, batch.uv)  # MediaPipe's pose-dependent offsets taken out
    if settings.correspondence == "index_map":
        frags = context.renderer.rasterize(verts_cam, tris, camera.intrinsics, batch.size, batch.size)
        tri, bary, ok = index_map_correspondence(frags.tri_id, frags.bary, uv)
        w = w * ok.to(w)  # (K,) or (B, K) times (B, K)
    else:
        tri = triangle_ids(corr, tris)
        bary = triangle_barycentrics(corr, tris, tri)
    if settings.facing_power > 0:
        w = w * landmark_facing(verts_cam, tris, corr) ** settings.facing_power
    res = deform_to_landmarks(verts_cam, tris, camera.intrinsics, uv, tri, bary, landmark_weights=w,
                              settings=settings, fixed_vertices=medium_fixed_vertices(model, settings))
    return MediumResult(camera=camera, vertices=camera.to_model(res.vertices_cam.to(verts_cam)),
                        max_laplacian_change=res.max_laplacian_change,
                        landmark_error_before=res.reprojection_before, landmark_error_after=res.reprojection_after)


def landmark_facing(verts_cam: torch.Tensor, tris: torch.Tensor, corr) -> torch.Tensor:
    """(B, K) in [0, 1]: how squarely each landmark's surface point faces the camera, n . v with n the
    mesh's unit normal there (interpolated vertex normals) and v the unit direction from the point
    to the camera centre; 0 where the surface faces away. ``verts_cam`` (B, V, 3) camera frame, mm."""
    normals = corr.points(vertex_normals(verts_cam, tris))
    points = corr.points(verts_cam)
    to_camera = torch.nn.functional.normalize(-points, dim=-1)
    return (torch.nn.functional.normalize(normals, dim=-1) * to_camera).sum(-1).clamp_min(0.0)


STAGE = Stage("medium", MediumSettings, run)


def unfold_flips(before: np.ndarray, after: np.ndarray, tris: np.ndarray, ring: sp.spmatrix,
                 max_rounds: int, spread: int = UNFOLD_SPREAD_RINGS) -> np.ndarray:
    """``after`` with the triangles that turned inside out (against ``before``) unfolded.

    ``before``, ``after``: (V, 3) mm, one mesh in two poses; ``tris`` (F, 3);
    ``ring``: (V, V) sparse, non-zero for a vertex and its edge neighbours.
    Each round shrinks the displacement ``after - before`` of the vertices of
    the flipped triangles by UNFOLD_SHRINK, fading to nothing over ``spread`` rings
    around them (a step would itself be a spike of the Laplacian; small steps
    stop near the least shrinking that unfolds); cumulatively, so a
    vertex hit in several rounds returns toward ``before``, whose triangles are
    not flipped against themselves. The rest of the mesh is untouched. Stops
    when nothing is flipped or after ``max_rounds`` rounds.
    """
    deg = np.asarray(ring.sum(axis=1)).ravel()
    mean_op = sp.diags(1.0 / np.maximum(deg, 1.0)) @ ring
    keep = np.ones(len(before))
    out = after
    for _ in range(max_rounds):
        flipped = _flipped_mask(before, out, tris)
        if not flipped.any():
            break
        core = np.zeros(len(before))
        core[tris[flipped].reshape(-1)] = 1.0
        fade = core
        for _ in range(spread):
            fade = np.maximum(core, mean_op @ fade)
        keep *= 1.0 - UNFOLD_SHRINK * fade
        out = before + (after - before) * keep[:, None]
    return out


# ------------------------------------------------------------------ diagnostics

def _as_batched_tensor(x) -> tuple[torch.Tensor, bool]:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().to(torch.float64).cpu()
    return (t[None], False) if t.ndim == 2 else (t, True)


def _flipped(before: torch.Tensor, after: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """(B, F) bool: the flip test of :func:`count_flipped_triangles` for (B, V, 3) float64 poses."""
    nb = face_normals(before, tris, normalize=False)
    na = face_normals(after, tris, normalize=False)
    return ((nb * na).sum(-1) < 0) & (nb.norm(dim=-1) > 2e-12)


def _flipped_mask(before: np.ndarray, after: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(F,) bool for one (V, 3) numpy mesh in two poses: triangles whose normal turned by more than 90 degrees."""
    tri = torch.from_numpy(np.asarray(tris, np.int64))
    return _flipped(torch.from_numpy(before)[None], torch.from_numpy(after)[None], tri)[0].numpy()


def count_flipped_triangles(before, after, triangles):
    """Triangles whose normal turned by more than 90 degrees between two poses of one mesh.

    ``before``, ``after``: (V, 3) or (B, V, 3) vertices, mm (numpy or torch);
    ``triangles`` (F, 3). A triangle counts when ``n_before . n_after < 0``.
    (Comparing against a fixed viewing direction instead is not a flip test:
    triangles seen edge-on at the silhouette change sides under any tiny
    motion.) Triangles degenerate before (area < 1e-12 mm^2) are skipped.
    Returns an int, or (B,) int64 for batched input.
    """
    vb, batched = _as_batched_tensor(before)
    va, _ = _as_batched_tensor(after)
    tri = torch.as_tensor(np.asarray(triangles.cpu() if isinstance(triangles, torch.Tensor) else triangles)).long()
    count = _flipped(vb, va, tri).sum(-1)
    return count if batched else int(count[0])


def max_laplacian_change(before, after, L: sp.spmatrix):
    """Largest ``|L v' - L v|`` (Euclidean norm of the 3-vector) over vertices, mm.

    ``before``, ``after``: (V, 3) or (B, V, 3) mm; ``L`` (V, V) from
    :func:`fitting.stages.laplacian.uniform_laplacian`. Returns a float, or (B,) float64 tensor.
    """
    vb, batched = _as_batched_tensor(before)
    va, _ = _as_batched_tensor(after)
    d = (va - vb).numpy()
    vals = torch.tensor([float(np.linalg.norm(L @ d[i], axis=1).max()) for i in range(d.shape[0])],
                        dtype=torch.float64)
    return vals if batched else float(vals[0])
