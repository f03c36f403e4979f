"""Coarse stage: the 3DMM fitted to the dense landmarks (METHOD.md eq. 1), then an optional photometric polish.

Reads top to bottom like the method:

1. landmark weights per MediaPipe group; contour points fade with yaw;
2. pose by an affine solve, refined under perspective (Levenberg-Marquardt);
3. identity and expression by regularised least squares, alternated with pose;
4. optionally, Adam through the renderer on pose, coefficients, SH light and
   a per-vertex albedo, with the landmark term kept (:mod:`fitting.stages.photometric`).

Batched over B faces; all tensors stay on the model's device.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Optional

import torch

from morphable import MorphableModel

from ..camera import Camera
from ..detections import DetectionBatch
from ..rotation import matrix_to_euler
from .context import Stage
from .correspondence import Correspondence
from .fusion import FusionSettings, mediapipe_to_68, mediapipe_trust, points68_basis_inputs, regressor_weights
from .landmark_fit import (LandmarkBasis, affine_pose, excluded_expressions, exp_l1_weights, landmark_weights,
                           refine_pose, reprojection_residual, solve_shape)

if TYPE_CHECKING:
    from .context import FitContext


@dataclass
class CoarseSettings:
    """Coarse-stage settings. Weights are relative (dimensionless) unless stated."""

    # Landmark weight per MediaPipe group (landmarks.indices.GROUP_NAMES). Iris
    # points sit on the eyeball, outside the face area: weight 0.
    group_weights: Dict[str, float] = field(default_factory=lambda: {
        "other": 1.0, "contour": 0.5, "eyes": 1.0, "iris": 0.0, "nose": 1.0, "brows": 0.7, "mouth": 1.0})
    # Contour points slide along the cheek as the head turns: their weight is
    # multiplied by cos(yaw) ** contour_yaw_power.
    contour_yaw_power: float = 4.0
    # Tikhonov weights, in squared normalised pixels per unit coefficient
    # (residuals are scaled so the landmark set spans 200 px). lambda_id measured 100 -> 50 / 30:
    # `bench coarse` (20 synthetic faces, MediaPipe's points) + photometric 3.195 -> 3.185 / 3.204 mm,
    # exact landmarks 2.04 -> 1.78 / 1.62 mm; `bench scan` coarse RMSE, mean of 4 yaws x 2 looks,
    # 1.47 -> 1.43 / 1.42 mm (better at yaw 0-20, worse by up to 0.06 / 0.14 mm at 40-60, where the
    # landmarks are less sure). 50: the best on the synthetic set, most of the scan's gain.
    lambda_id: float = 50.0
    # Issue 16 (expressions absorbing identity; `bench scan`, `bench expressions`), measured and left out,
    # least squares, `bench scan` without the regressor: browDown_L stays 1.00 at yaw 0-40 under an
    # overlap-aware price per expression (+ mu x lambda_id x |C_j|^2, C_j the identity's ridge fit of
    # expression j's landmark rows; mu 0.3 / 1 / 3 -> 1.00 / 1.00 / 0.86, while on 6 synthetic faces
    # with set expressions (yaw 0-40) a smile of 0.8 was found at 0.46 / 0.29 / 0.16 and jawOpen 0.5 at
    # 0.15 / 0.09 / 0.06, against 0.62 and 0.28 today),
    # an orthogonalised identity prior lambda_id |a_id + C a_exp|^2 (1.00; neutral mean RMSE 1.62 ->
    # 1.66 mm), eyeBlink pinned at 1, brows and the lid-crease rings at weight 0. A dense 3D fit of the
    # model to that scan needs no browDown (< 0.1; identity alone 1.37 mm): MediaPipe's brows there sit
    # about 8 mm, its lid-crease points 4-7 mm, below the model's (the table's) points on that fit.
    lambda_exp: float = 10.0
    # Sparse prior on the expressions: + lambda_exp_l1 * sum_j a_exp_j (L1 on activations kept >= 0), same
    # units as lambda_exp: a face uses few blendshapes, and the Tikhonov term alone let each one take up a
    # little of MediaPipe's correspondence error until they summed to a false expression (issue 16: browDown
    # 0.9-1.0 on the neutral scan). Measured on the faces of `bench expressions` (6 sets x 4 identities x
    # yaw 0/20/40, seed 0, least squares), l1 0 / 100 / 200 / 400 / 700 / 1000: fit against the truth 3.37 /
    # 3.27 / 3.23 / 3.20 / 3.18 / 3.18 mm, identity (neutral mesh) 3.05 / 3.03 / 3.03 / 3.04 / 3.05 / 3.06 mm
    # (flat), mean largest false weight 0.66 / 0.39 / 0.30 / 0.18 / 0.10 / 0.07; the cost is in the true
    # weights: a smile of 0.8 found at 0.48 / 0.46 / 0.45 / 0.43 / 0.39 / 0.34, jawOpen 0.5 at 0.38 / 0.38 /
    # 0.38 / 0.34 / 0.28 / 0.26 (blinks and brows, which MediaPipe's points on these faces hardly show,
    # 0.25 / 0.25 / 0.10 at 0, fall to <= 0.01). The fit's error is flat from 700 to 1000; `bench scan`
    # (default pipeline, a neutral head scan whose brow points sit ~8 mm off the model's) needs about 1000 to
    # keep every weight under 0.3 at yaw 0-40 (largest 1.00 / 0.80 / 0.49 / 0.32 / 0.10 at 0 / 300 / 500 /
    # 700 / 1000), so 1000, the plateau's end. `bench coarse` (20 faces, least squares) 3.21 -> 3.11 mm,
    # landmark error 0.78 -> 0.89 px. Its cost on the scan (with exp_l1_exclude below): coarse RMSE, mean of 8
    # rows, 1.44 -> 1.46 mm (uniform look, yaw 0 / 20: 1.47 / 1.21 -> 1.61 / 1.35: the identity takes up part
    # of the brow offset the expressions no longer do; yaw 60 1.95 -> 1.67), neutral 1.53 -> 1.53 mm.
    lambda_exp_l1: float = 1000.0
    # Blendshapes without the L1 prior (name prefixes): the eyes' closing, which photos (blinks) and the scan
    # (eyes closed) show often, and which the L1 prior took away: `bench expressions` eyes-closed faces
    # eyeBlink found at 0.25 (truth 1; at 0 without the prior) -> 0.00 with it -> 0.24 without it on the blinks;
    # scan eyeBlink_L/R 1.00/0.68 (uniform, yaw 0; no prior) -> 0.53/0.26 -> 1.00/0.69. The cost: neutral
    # faces' largest false weight 0.03 -> 0.12 (eyeBlink); all sets' fit against the truth 3.18 -> 3.17 mm.
    exp_l1_exclude: tuple = ("eyeBlink",)
    n_id: int = 100  # identity modes used (the first n_id)
    exp_bounds: tuple = (0.0, 1.0)  # ICT expression activations
    # Expression blendshapes left out of the fit (name prefixes): gaze turns the
    # eyeballs, which the face area does not contain, and only confuses the lids.
    exp_exclude: tuple = ("eyeLook",)
    # MediaPipe's relative depth as a weak extra constraint (0 = off: on the
    # synthetic benchmark it hurt even with exact landmarks, 1.92 -> 1.60 mm without it).
    lambda_depth: float = 0.0
    alternations: int = 4
    pose_iterations: int = 10
    # Move each landmark's table point by the correspondence table's yaw-dependent offset
    # (fitting.stages.correspondence: where MediaPipe's point sits as the head turns); off = the bare
    # surface points, as for landmarks that are true surface projections.
    landmark_offsets: bool = True
    # Photometric polish (Adam through the renderer); see fitting.stages.photometric.
    photometric: bool = True
    # Adam steps of the polish, its step sizes annealed to zero along a cosine over them. Measured
    # 60 -> 30 steps: bench coarse (20 faces) shape error 3.201 -> 3.195 mm (20 steps: 3.191);
    # bench photos coarse 2.21 -> 2.20 % IOD, PSNR 36.57 -> 36.55 dB, SSIM 0.9345 -> 0.9347;
    # half the polish's time.
    photometric_steps: int = 30
    photometric_size: int = 192  # px: render size for the polish (crop is resampled)
    # px at photometric_size: the compared skin regions shrink by this much, so that the pixels next to
    # brows, eyelids and lips (whose painted or real edges the landmark regions miss by a pixel or two: a dark
    # brow inside the skin region reads as shading and bends the brow ridge) are not compared. 0: the regions
    # as they are (the single-view polish, whose numbers were measured so); the joint fit erodes (see
    # fitting.stages.joint.SamePersonSettings.polish_erode_px).
    photometric_erode_px: int = 0
    # Pixels whose intensity over the start's prediction (the least squares' shape, one skin colour, the light
    # fitted to it) lies outside [r, 1 / r] times the face's median ratio are not compared
    # (fitting.stages.photometric.shading_outliers: beards, brows, moles, cast shadows, highlights), r this
    # unitless ratio in (0, 1). 0: all compared (the single-view polish, as measured); the joint fit sets its
    # own (SamePersonSettings.polish_outlier_ratio).
    photometric_outlier_ratio: float = 0.0
    photometric_lr: float = 0.01
    # Landmark term during the polish, relative to the photometric term: at 1 the
    # polish gave up landmark fit on real photos (4.9% of the inter-ocular distance).
    landmark_weight: float = 10.0
    # MediaPipe's points against the regressor's 68 (fitting.stages.fusion), when the initialiser gives them.
    fusion: FusionSettings = field(default_factory=FusionSettings)


@dataclass
class CoarseResult:
    """What the coarse stage hands on. Shapes: B faces, V vertices, K landmarks.

    ``camera``: the batch's crop cameras (pose fitted here, model -> camera);
    ``vertices`` (B, V, 3) model frame, mm; ``id_coeffs`` (B, n_id),
    ``exp_coeffs`` (B, n_exp); ``landmark_error`` (B,) mean reprojection error in
    crop pixels over the weighted landmarks; ``light`` (B, 9, 3) SH and
    ``albedo`` (B, V, 3) when the photometric polish ran; ``landmark_offsets``
    (B, K, 3) mm, model frame: the correspondence table's offsets at the fitted
    yaw (None: bare surface points); ``landmark_trust`` (B,) in [0, 1]: the weight MediaPipe's points
    had against the regressor's 68 (:mod:`fitting.stages.fusion`; None: MediaPipe's alone, trust 1),
    which the medium stage's targets follow; ``points68`` (B, 68, 2) crop px and ``weights68`` (B, 68): the
    regressor's points and their weights in the fit (None without them), which the photometric polish keeps.
    """

    camera: Camera
    vertices: torch.Tensor
    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    landmark_error: torch.Tensor
    light: Optional[torch.Tensor] = None
    albedo: Optional[torch.Tensor] = None
    seconds: float = 0.0
    landmark_offsets: Optional[torch.Tensor] = None
    landmark_trust: Optional[torch.Tensor] = None
    points68: Optional[torch.Tensor] = None
    weights68: Optional[torch.Tensor] = None

    def landmark_points(self, corr: Correspondence, vertices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, K, 3) model frame: where this fit puts MediaPipe's points on ``vertices`` (B, V, 3; default
        the coarse vertices): the table's surface points plus ``landmark_offsets``."""
        pts = corr.points(self.vertices if vertices is None else vertices)
        return pts if self.landmark_offsets is None else pts + self.landmark_offsets.to(pts)

    def surface_uv(self, corr: Correspondence, uv: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) crop pixels: MediaPipe's points ``uv`` moved by the shift the offsets cause at this fit,
        i.e. where the bare surface points should project (what the medium stage pulls them to)."""
        if self.landmark_offsets is None:
            return uv
        surface = corr.points(self.vertices)
        shift = (self.camera.project(surface + self.landmark_offsets.to(surface))
                 - self.camera.project(surface))[..., :2]
        return uv - shift.to(uv)


@dataclass
class CoarseInit:
    """What an initialiser may provide (any field may be None): coefficients, pose, albedo, and
    ``points68`` (68, 2) crop pixels: the 68 iBUG points (the model's ``multipie68`` vertices) it
    found, which the coarse stage fuses with MediaPipe's (:mod:`fitting.stages.fusion`)."""

    id_coeffs: Optional[torch.Tensor] = None
    exp_coeffs: Optional[torch.Tensor] = None
    rotation: Optional[torch.Tensor] = None
    translation: Optional[torch.Tensor] = None
    albedo: Optional[torch.Tensor] = None
    points68: Optional[torch.Tensor] = None


def fit_landmarks(model: MorphableModel, batch: DetectionBatch, corr: Correspondence, settings: CoarseSettings,
                  init: Optional[CoarseInit] = None) -> CoarseResult:
    """Steps 1-3: pose and coefficients by least squares, alternated. No rendering.

    With ``init.points68`` (B, 68, 2) and ``settings.fusion.enabled`` the regressor's 68 points join
    MediaPipe's as landmarks on the model's ``multipie68`` vertices, and MediaPipe's weights are scaled
    per face by :func:`fitting.stages.fusion.mediapipe_trust` (MediaPipe's depth term is then off)."""
    t0 = time.perf_counter()
    dev = model.device
    uv, k = batch.uv.to(dev), batch.intrinsics.to(dev)
    b = uv.shape[0]
    lb = LandmarkBasis.from_model(model, corr.vertex_ids.to(dev), corr.bary.to(dev), n_id=settings.n_id)
    n_id, n_exp = settings.n_id, model.n_exp
    coeffs = torch.zeros(b, n_id + n_exp, device=dev)
    if init is not None and init.id_coeffs is not None:
        coeffs[:, :min(n_id, init.id_coeffs.shape[1])] = init.id_coeffs[:, :n_id].to(dev)
    if init is not None and init.exp_coeffs is not None:
        coeffs[:, n_id:] = init.exp_coeffs.to(dev)

    # An initialiser's coefficients are the centre of the shape prior, not only a start.
    prior_mean = coeffs.clone() if init is not None and (init.id_coeffs is not None or init.exp_coeffs is not None) \
        else None
    w = landmark_weights(batch, corr, settings).to(dev)
    use_offsets = settings.landmark_offsets and corr.has_offsets

    def at_pose(rotation):
        # MediaPipe's points shift with the head's yaw (fitting.stages.correspondence): the basis at this pose
        if not use_offsets:
            return lb, None
        offsets = corr.offsets_at(matrix_to_euler(rotation)[0]).to(dev)
        return lb.shifted(offsets), offsets

    rot, t, fuse = start_pose_and_fusion(model, batch, corr, settings, init, lb.points(coeffs), w)
    lb_pose, offsets = at_pose(rot)
    lb_all, uv_all, w_all = fused_targets(fuse, lb_pose, uv, w)
    rot, t = refine_pose(lb_all.points(coeffs), uv_all, w_all, k, rot, t, settings.pose_iterations)
    rel = batch.rel_depth.to(dev) if fuse is None else None
    frozen = torch.zeros(n_id + n_exp, dtype=torch.bool, device=dev)
    frozen[n_id:] = excluded_expressions(model, settings).to(dev)
    l1 = exp_l1_weights(model, settings).to(dev)
    for _ in range(settings.alternations):
        w = landmark_weights(batch, corr, settings, rot).to(dev)
        lb_pose, offsets = at_pose(rot)
        lb_all, uv_all, w_all = fused_targets(fuse, lb_pose, uv, w)
        coeffs = solve_shape(lb_all, uv_all, w_all, k, rot, t, settings.lambda_id, settings.lambda_exp,
                             prev_coeffs=coeffs, exp_bounds=settings.exp_bounds, rel_depth=rel,
                             lambda_depth=settings.lambda_depth, frozen=frozen, prior_mean=prior_mean,
                             lambda_exp_l1=l1)
        rot, t = refine_pose(lb_all.points(coeffs), uv_all, w_all, k, rot, t, settings.pose_iterations)
    lb_pose, offsets = at_pose(rot)
    err = reprojection_residual(lb_pose.points(coeffs), rot, t, uv, k).norm(dim=-1)
    wmask = (w > 0).to(err)
    verts = model(coeffs[:, :n_id], coeffs[:, n_id:])
    camera = Camera(intrinsics=k, rotation=rot, translation=t, height=batch.size, width=batch.size)
    return CoarseResult(camera=camera, vertices=verts, id_coeffs=coeffs[:, :n_id], exp_coeffs=coeffs[:, n_id:],
                        landmark_error=(err * wmask).sum(1) / wmask.sum(1), landmark_offsets=offsets,
                        albedo=None if init is None else init.albedo, seconds=time.perf_counter() - t0,
                        landmark_trust=None if fuse is None else fuse.trust,
                        points68=None if fuse is None else fuse.uv, weights68=None if fuse is None else fuse.weights)


def start_pose_and_fusion(model: MorphableModel, batch: DetectionBatch, corr: Correspondence,
                          settings: CoarseSettings, init: Optional[CoarseInit], points: torch.Tensor,
                          weights: torch.Tensor):
    """The landmark fit's start, for one face per view or per photo: ``(rotation (B, 3, 3), translation (B, 3),
    fusion)``. The pose is the initialiser's when it has one, else the affine solve of ``points`` (B, K, 3)
    model frame (the start shape's landmark points) onto MediaPipe's with ``weights`` (B, K); the fusion
    (:class:`LandmarkFusion`) is None without the regressor's points or with ``settings.fusion`` off.
    Raises ValueError for a face MediaPipe did not find that cannot then be fitted."""
    dev = model.device
    if init is not None and init.rotation is not None and init.translation is not None:
        rot, t = init.rotation.to(dev), init.translation.to(dev)
    else:
        rot, t = affine_pose(points, batch.uv.to(dev), weights, batch.intrinsics.to(dev))
    fuse = LandmarkFusion.start(model, batch, corr, settings, init, rot, settings.n_id) \
        if settings.fusion.enabled else None
    if fuse is None and not batch.mediapipe_found:
        raise ValueError("a face MediaPipe did not find (fitting.regressor_faces) needs the regressor's 68 points "
                         "and fusion (CoarseSettings.fusion.enabled) to be fitted")
    return rot, t, fuse


def fused_targets(fuse: Optional["LandmarkFusion"], lb: LandmarkBasis, uv: torch.Tensor, weights: torch.Tensor):
    """``(basis, targets, weights)`` of a landmark solve: MediaPipe's points alone (``fuse`` None), or with
    the regressor's 68 joined (:meth:`LandmarkFusion.join`)."""
    return (lb, uv, weights) if fuse is None else fuse.join(lb, uv, weights)


@dataclass
class LandmarkFusion:
    """The regressor's 68 points as extra landmarks of :func:`fit_landmarks` (:mod:`fitting.stages.fusion`):
    ``basis`` their LandmarkBasis (68 points), ``uv`` (B, 68, 2) crop px, ``weights`` (B, 68), ``trust``
    (B,) MediaPipe's face trust."""

    basis: LandmarkBasis
    uv: torch.Tensor
    weights: torch.Tensor
    trust: torch.Tensor

    @classmethod
    def start(cls, model, batch, corr, settings: CoarseSettings, init: Optional[CoarseInit], rotation, n_id: int):
        """None without the initialiser's 68 points; ``rotation`` (B, 3, 3) the start pose (its yaw)."""
        if init is None or init.points68 is None:
            return None
        dev = model.device
        p68 = init.points68.to(dev, torch.float32)
        yaw = matrix_to_euler(rotation)[0]
        trust = mediapipe_trust(batch.uv.to(dev), p68, yaw, mediapipe_to_68(model, corr), settings.fusion)
        # a face MediaPipe's mesh missed (its points are stand-ins, fitting.regressor_faces): the regressor alone
        trust = trust * batch.mediapipe_weight.to(trust)
        ids, bary = points68_basis_inputs(model)
        basis = LandmarkBasis.from_model(model, ids, bary, n_id=n_id)
        return cls(basis=basis, uv=p68, weights=regressor_weights(yaw, settings.fusion, trust),
                   trust=trust)

    def join(self, lb: LandmarkBasis, uv: torch.Tensor, w: torch.Tensor):
        """MediaPipe's ``lb`` (K points), ``uv`` (B, K, 2), ``w`` (B, K) with the 68 points appended and
        MediaPipe's weights scaled by the trust: ``(basis, uv, weights)`` of K + 68 points."""
        b = uv.shape[0]
        mean = lb.mean if lb.mean.dim() == 3 else lb.mean.expand(b, *lb.mean.shape)
        basis = LandmarkBasis(mean=torch.cat([mean, self.basis.mean.expand(b, -1, -1).to(mean)], 1),
                              basis=torch.cat([lb.basis, self.basis.basis.to(lb.basis)], 0), n_id=lb.n_id)
        return basis, torch.cat([uv, self.uv.to(uv)], 1), torch.cat([w * self.trust[:, None].to(w),
                                                                    self.weights.to(w)], 1)


def run(context: "FitContext", batch: DetectionBatch, previous=None) -> CoarseResult:
    """The coarse stage on a batch: the initialiser (if any), least squares, then the photometric
    polish when ``settings.photometric``. ``previous`` is unused (the first stage)."""
    settings: CoarseSettings = context.settings["coarse"]
    coarse = fit_landmarks(context.model, batch, context.correspondence, settings,
                           initial_guess(context, batch))
    if settings.photometric:
        from .photometric import photometric_refine
        coarse = photometric_refine(context.model, batch, context.correspondence, coarse, settings,
                                    context.renderer)
    return coarse


# Leading dimensions (after the batch) of each CoarseInit field, to tell one face's value from a batch.
_INIT_DIMS = {"id_coeffs": 1, "exp_coeffs": 1, "rotation": 2, "translation": 1, "albedo": 2, "points68": 2}


def initial_guess(context: "FitContext", batch: DetectionBatch) -> Optional[CoarseInit]:
    """Run the context's initialiser on each face and stack what it returned (a field counts only
    if every face has it); None without an initialiser."""
    if context.initializer is None:
        return None
    camera = getattr(context.initializer, "needs_intrinsics", False)
    if hasattr(context.initializer, "batch"):  # all faces in one call (the regressor: one network call per pass)
        init = context.initializer.batch(batch.images, torch.cat([batch.uv, batch.rel_depth[..., None]], -1),
                                         context.model, **({"intrinsics": batch.intrinsics} if camera else {}))
        return CoarseInit(**{name: getattr(init, name).to(context.device) for name in _INIT_DIMS
                             if getattr(init, name) is not None})
    inits = [context.initializer(batch.images[i], torch.cat([batch.uv[i], batch.rel_depth[i, :, None]], 1),
                                 context.model, **({"intrinsics": batch.intrinsics[i]} if camera else {}))
             for i in range(len(batch))]
    fields = {}
    for name, dims in _INIT_DIMS.items():
        vals = [getattr(x, name) for x in inits]
        if any(v is None for v in vals):
            continue
        vals = [torch.as_tensor(v) for v in vals]
        fields[name] = torch.stack([v[0] if v.dim() == dims + 1 else v for v in vals]).to(context.device)
    return CoarseInit(**fields)


STAGE = Stage("coarse", CoarseSettings, run)

