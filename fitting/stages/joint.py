"""Several photos of one person: one identity, each view's own pose and expression (issue 18).

The coarse stage's landmark least squares (:mod:`fitting.stages.landmark_fit`)
over N views at once:

1. each view's pose by the affine solve and Levenberg-Marquardt, on the mean face;
2. with the poses fixed, one regularised linear solve over every view's
   landmark rows for ``x = (a_id, a_exp_1, ..., a_exp_N)``: the identity
   coefficients are shared, the expression coefficients are per view. Each
   view's rows are :func:`~fitting.stages.landmark_fit.shape_rows`, so its
   normal equations are the single-view ones; their identity blocks add up,
   their expression blocks sit on the diagonal and the identity-expression
   blocks couple the two (an arrow-shaped system of n_id + N n_exp unknowns). The identity prior ``lambda_id`` is counted
   once, not per view: N views weigh N times as much against it, which is
   what averaging views is for. Expressions are kept in their bounds by the
   same active set as the single-view solve;
   For a video's frames (``ordered``) a temporal term ties each frame's
   expression to its neighbours': the expression blocks become block
   tridiagonal. The identity is eliminated by its Schur complement, so the
   cost grows with N, not N^3;
3. alternate pose (per view, batched) and shape; from the second solve on (photos), each view's
   points are weighted by how well their residuals agree with the other views' (:func:`view_agreement`);
4. with ``SamePersonSettings.photometric`` and a renderer (photos; a video's frames with
   ``photometric_video``), the coarse stage's photometric polish on all views at once, the identity
   shared and all views' landmark terms weighing as one view's.

Tensors: N views of ONE person batched as the leading dimension, as the single
view stages batch faces. Frames and units as in :mod:`fitting.stages.landmark_fit`.
With N = 1 the solve is the single-view one (:func:`fitting.stages.coarse.fit_landmarks`
without an initialiser).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from morphable import MorphableModel

from ..camera import Camera
from ..detections import DetectionBatch
from ..rotation import matrix_to_euler
from .coarse import CoarseInit, CoarseSettings, fit_landmarks, fused_targets, start_pose_and_fusion
from .correspondence import Correspondence
from .landmark_fit import (LandmarkBasis, excluded_expressions, exp_l1_weights, landmark_weights, refine_pose,
                           reprojection_residual, shape_rows, solve_spd)
from .view_texture import ViewTextureSettings


@dataclass
class SamePersonSettings:
    """Settings of the joint fit. Weights as in :class:`fitting.stages.coarse.CoarseSettings`."""

    # Landmark weights, priors (lambda_id: once for the shared identity; lambda_exp: per view),
    # alternations and pose iterations: the coarse stage's, whose values were measured for one view.
    coarse: CoarseSettings = field(default_factory=lambda: CoarseSettings(photometric=False))
    # Tikhonov weight on the shared identity, squared normalised pixels per unit coefficient, counted
    # once for all views (None: coarse.lambda_id, the single-view value).
    # On a video the frames repeat MediaPipe's error of the person (one pose range, one face), so the
    # joint identity fits that error: bench same-person's 90-frame clip, seeds 0 / 1 / 2, identity mm
    # 4.18 / 2.74 / 3.90 against the independent per-frame fits' 3.07 / 2.92 / 3.67 (mean of each frame's).
    # A stronger prior moves it toward the truth and the error into the expressions (with the identity
    # held at the truth the expression error is 0.0134 against 0.0079, seed 0): x10 3.70 / 2.73 / 3.62 mm,
    # expression error 0.0079 / 0.0105 / 0.0080 -> 0.0084 / 0.0109 / 0.0092; x90 (one frame's prior per frame)
    # 2.97 / 2.65 / 3.58 mm, 0.0087 / 0.0120 / 0.0109 (the independent fits: 0.0094 / 0.0120 / 0.0141). Not
    # taken (2026-12-03): expression curves are what a video's users ask for, and the trade is mixed. The
    # joint photometric polish on 8 key frames (then the frames fitted with that identity held), seed 0:
    # identity 3.55 mm, expression error 0.0179.
    lambda_id: Optional[float] = None
    # Warn that the photos may not show one person when a view's own single-view identity lies
    # farther than this from the joint one (mean distance over the neutral meshes' vertices, mm). Both
    # are landmark least squares (the joint identity before its photometric polish): the polish moves the
    # identity by what shading says, which no single view's landmarks know (against the polished identity
    # all three views of a real set, a portrait with its mirror image and a 0.6x copy, were 4.2-4.3 mm
    # away; against the least squares no view of three such sets warned).
    # Measured (synthetic, MediaPipe's points): views of one person 0.8-2.5 mm (bench same-person,
    # seed 0: 40 views, median 1.50, max 2.53; 25 more views, max 2.02); sets mixing synthetic people
    # 0.8-2.95 mm (median 1.58), one intruder among 4 views of another person 1.0-3.5 mm; three real
    # photos of three people 1.4-1.9 mm. Set above every same-person view: a weak check, which
    # flags only gross disagreement (1 of 5 synthetic intruders, no same-person view). Random ICT
    # identities seen through MediaPipe's points are not told apart per view by this distance, nor by
    # the rise in landmark error between the single-view and the joint fit (measured too).
    disagreement_mm: float = 3.0
    # Run the single-view fits that the disagreement check needs (landmark least squares only).
    check_disagreement: bool = True
    # The check that does tell people apart, where dlib is installed (pip install ".[identity]",
    # landmarks.identity): warn when a photo's face descriptor lies farther than this from the other
    # photos' (the lower median of its distances to them; None: off). 0.6 is dlib's own threshold for its
    # net; measured with our boxes: 8 real people 0.66-1.0 apart in every pair, a photo and its mirror
    # image 0.14-0.4, the scan rendered at yaw 0 / 20 / 40 in both bench scan looks at most 0.57 apart.
    # Photos only: a video is one person's by contract (fit_video).
    face_descriptor_distance: Optional[float] = 0.6
    # Views turned further than this (|yaw|, degrees, of the joint fit) are left out of that check:
    # dlib's net was trained on faces its frontal detector finds; the scan rendered at yaw 70 lies
    # 0.41-0.55 from those renders and up to 0.64 from their mirror images, near where two people begin.
    face_descriptor_max_yaw_deg: float = 45.0
    # The same for a video's frames (fit_same_person(..., ordered=True)): off, a video is one person's by
    # contract (fit_video). Measured on the synthetic 90-frame clip (seed 0, fit-face clip.mp4, this busy
    # 2-core machine): the check's single-view fits of every frame took 76 of the joint fit's 141 s, and
    # flagged 14 of the 90 frames of the one person (3.0-3.6 mm: the frames' own identities vary more
    # than photos' do, with the expressions in motion).
    check_disagreement_ordered: bool = False
    # The coarse stage's photometric polish on all views at once with the identity shared
    # (fitting.stages.photometric, shared_identity=True; coarse.photometric_* settings); runs when
    # fit_same_person is given a renderer, on photos (not on a video's frames: photometric_video).
    # Shading is the one cue here whose error is not shared by the views (MediaPipe's points are off
    # in much the same way in every view of a face, so the least squares' identity gains little from
    # more views). Measured, bench same-person (5 people, regressor on), identity error joint / single-
    # view least squares at 8 views, seeds 0 / 1: least squares 0.925 / 0.993; polish with the landmarks
    # at full weight in every view 0.893 (seed 0); as one view (below) 0.823 / 0.839; with agreement_mm
    # too 0.824 / 0.809 (each view's own polish: 0.979 / 0.970); with the joint polish's own balance below
    # (2026-12-03) 0.664 / 0.647. Costs about 3.8 CPU s per view on this 2-core machine (90 steps at 192 px;
    # bench same-person 'joint s' at 8 views 30.5 / 31 s, one thread while another bench ran).
    # What limited it before that balance (seed 0, 3 people, 8 views): started at the true identity the same polish ends at
    # 1.46 mm (0.50 x), from the least squares at 2.34-2.41 mm, and more steps (60: 0.814 x), 3x the step
    # size (0.801), the light re-solved every step, a Cauchy photo loss (0.864) or a 0.3x identity prior
    # do not bridge it: the photo term hardly tells the two apart (person 0: 0.006636 at 1.99 mm against
    # 0.006607 at 1.38 mm) or prefers the wrong one (person 1: 0.01303 at 2.54 mm, 0.01328 at 1.78 mm).
    # One skin colour per view cannot follow the generator's albedo (blotches, red cheeks), and the
    # bench's views of a person each draw their own albedo and light, so no colour is shared to fit.
    photometric: bool = True
    # The polish on a video's frames (fit_same_person(..., ordered=True)) too: off, at about 5 s a
    # frame it is far from part (b)'s 2 frames per second.
    photometric_video: bool = False
    # In the joint polish, every view's landmark term is divided by the number of views, so that all
    # views' landmarks weigh as one view's against the identity prior and the photometric term, which
    # counts every view: MediaPipe's error repeats across the views of one face, so N views' landmarks
    # do not know the identity N times better, and at full weight per view they held the polish at the
    # least squares' identity. Measured at 8 views (seed 0, first 3 people): full weight 0.870, 1/N
    # 0.810 (a fixed 0.2: 0.826; 1/N with 3x the step size 0.801, with 60 steps 0.814).
    polish_landmarks_as_one_view: bool = True
    # The joint polish's own balance, on top of the above (2026-12-03). Eight views' shading knows the identity
    # better than one view's: with the single-view polish's balance the joint polish stopped near its start (the
    # least squares, 2.74 mm on seed 0), held by the identity prior and the landmarks, while started at the truth
    # it stayed at 1.1-1.4 mm, and at the end the prior was the largest difference between the two energies
    # (0.94e-3 at the truth's end, 0.30e-3 at the least squares'; photo terms within 0.1e-3). Measured with
    # bench same-person's people (5 x 8 views, regressor on), identity error of the 8-view polish, mm, seed 0
    # (single-view least squares 2.974 mm): landmarks 0.3/N 2.428; + the skin regions eroded by 2 px 2.364 (the
    # photo term's mean 7.47e-3 -> 1.94e-3: it was mostly the brows', eyelids' and lips' edges); + identity
    # prior x 0.1 2.311; + 90 steps 2.142 (60: 2.093 at the values below; 150: 2.090; 3x the step size instead
    # 2.273); landmarks 0.1/N and prior x 0.03 (taken) 2.015, seed 1 1.794; 0.03/N and x 0.01 1.940 / 1.777.
    # Taken the weaker step of the two: fewer views, and real photos, have less shading to stand on.
    # Then a real photo's beard read as shading: a young bearded man's photo with its mirror image and a
    # 0.6x copy got heavy jowls from the weaker priors (the identity's rms coefficient 0.69 -> 1.27).
    # Hence the outlier test (polish_outlier_ratio): the pixels darker or brighter than one skin colour under
    # the start's light by more than shading can make them are not compared. Bench same-person, 8 views / one
    # view's least squares, seeds 0 / 1 / 2 (seed 2 was not used to choose): off 0.678 / 0.639 / 0.682;
    # intensity ratio outside [0.7, 1/0.7] x the median (taken) 0.664 / 0.647 / 0.672. Tried first: the start
    # residual past k robust standard deviations, which also cuts the synthetic views' true shape errors:
    # k = 4 0.688 / 0.684 / 0.716, 3 0.710 / 0.715 / 0.744, 2.5 0.723 / 0.721. The real scan (CC BY 3.0, bench
    # scan's renders at yaw 0, +-20, +-40 as five photos of one person), RMSE of the joint neutral mesh, mm,
    # uniform / textured look: the single-view fits 1.52 / 1.62 (mean over the views), joint least squares
    # 1.54 / 1.76, the joint polish before this balance 1.26 / 1.47; with it, outliers off 1.03 / 1.33, ratio
    # 0.7 1.04 / 1.22 (k = 4 1.06 / 1.27, 3 1.07 / 1.25, 2.5 1.11 / 1.23). The beard's jowls: mostly gone at
    # ratio 0.7 (rms coefficient 1.10; k = 4 1.27, 3 1.13).
    polish_steps: int = 90                # Adam steps of the joint polish (coarse.photometric_steps: one view's)
    polish_landmark_scale: float = 0.1    # factor on every view's landmark term (after the 1/N above)
    polish_id_prior_scale: float = 0.03   # factor on the identity prior (coarse.lambda_id) in the polish
    polish_erode_px: int = 2              # coarse.photometric_erode_px for the joint polish
    polish_outlier_ratio: float = 0.7     # coarse.photometric_outlier_ratio for the joint polish
    # Per-view landmark trust from the views' agreement (view_agreement): after the first solve, each
    # view's point is weighted 1 / (1 + (e / agreement_mm)^2), e the distance (mm, model frame) of its
    # residual, lifted to 3D, from the same point's mean residual over the views. A residual the views
    # share is MediaPipe's bias on this face (no view tells it from the face); one view's own is that
    # view's error. Photos only (not a video's frames, whose fit part (b) of the bench measures); None or
    # 0: off (and with one view). Measured, bench same-person least squares, joint /
    # single at 8 views, seeds 0 / 1: off 0.925 / 0.993; 2 mm 0.927 / 0.957; 1 mm 0.925 / 0.940. The
    # reverse, down-weighting the points whose residual the views share (1 / (1 + (|mean| / s)^2)):
    # s = 2 mm 0.923 / 0.996, 1 mm 0.927 / 1.006; every point by its own residual (plain reweighting, which
    # a single view could do too) 1.5 normalised px 0.926 / 0.935.
    agreement_mm: Optional[float] = 1.0
    # Frames of one video (fit_same_person(..., ordered=True)): a penalty on each expression weight's
    # change between consecutive fitted frames, lambda * sum_t |e_t+1 - e_t|^2, in the units of
    # coarse.lambda_exp (squared normalised pixels per unit weight). 0: each frame's own.
    # Measured, bench same-person --clip-frames 30 (seed 0; the values were chosen on this clip): jitter
    # (mean |second difference| of the vertices) / expression-weight error / eyeBlink error:
    # independent per-frame fits 1.539 mm / 0.0616 / 0.134; joint at 0: 1.034 / 0.0743 / 0.145;
    # with the eye shapes at 0.05 x (below): 1000: 0.524 / 0.0553 / 0.142; 2000: 0.446 / 0.0507 / 0.139;
    # 4000: 0.390 / 0.0483 / 0.144 (truth's own jitter: 0.230 mm). Checked on two clips it was not
    # chosen on (--clip-frames 90, seeds 0 and 1), 2000 -> 5000: jitter 0.399 -> 0.320 and 0.361 ->
    # 0.287 mm (independent fits 1.246 and 1.290: 0.32 / 0.28 x -> 0.26 / 0.22 x), weight error
    # 0.0508 -> 0.0463 and 0.0914 -> 0.0866 (independent 0.0601 and 0.0791: seed 1's joint fit is
    # worse at any weight), eyeBlink error 0.137 / 0.123 -> 0.137 / 0.125; the 30-frame clip at
    # 5000: 0.359 mm / 0.0481 / 0.146. 5000: under 0.3 x the independent jitter on all three clips.
    # (Those numbers predate the L1 prior's arrival and a video's own L1 settings below; bench same-person
    # --clip-only prints the current ones.)
    lambda_temporal_exp: float = 5000.0
    # Expressions (name prefixes) that change within 2-3 frames (a blink), and the factor on their
    # temporal weight: at a full weight of 2000 the clip's 3-frame blinks peaked at 0.39 instead of 1
    # (independent fits 0.78; at 0.05 x: 0.65), eyeBlink error 0.181. 0.05 -> 0.01 (with the L1 prior
    # below; --clip-frames 90 seed 0): blink peaks 0.79 -> 0.99, eyeBlink error 0.118 -> 0.109, jitter
    # 0.268 -> 0.284 mm (0: 0.107 / 0.290 mm).
    temporal_fast: tuple = ("eyeBlink", "eyeSquint", "eyeWide")
    temporal_fast_scale: float = 0.01
    # A video's frames (ordered): the expressions' L1 prior (coarse.lambda_exp_l1's units, per frame; None: the
    # coarse stage's) and the shapes it leaves out (name prefixes; None: coarse.exp_l1_exclude). Issue 18 (b):
    # with the coarse stage's (1000, eyeBlink left out) the joint fit's expression-weight error was worse
    # than the independent per-frame fits' (bench same-person --clip-frames 90, seed 0: 0.0107 vs 0.0094),
    # jawOpen the largest part (0.177 vs 0.142; peaks 0.25 for a true 0.45). Measured what causes it:
    # the shared identity only in part: held at the truth, jawOpen error 0.175 (seed 0) and 0.074 (seed 1,
    # against 0.166 joint), with false mouth/cheek weights of 0.15-0.3 instead (mouthShrugUpper,
    # cheekSquint: MediaPipe's mouth points do not fit the true face); fed exact landmarks, 0.066. The
    # rest is MediaPipe's points, which open the mouth less than the truth, and the L1 prior, which
    # shrinks jawOpen further, and false, clip-long weights of 0.01-0.03 (mouthClose, cheekPuff,
    # mouthPucker) that a per-frame identity soaks up and the shared one does not. Like the blinks,
    # jawOpen (speech) is left out of the prior, and the prior on the others raised. Weight error /
    # jawOpen / eyeBlink / jitter, three clips (seeds 0, 1 and a clip of seed 0 with a slow smile to
    # 0.6 and pucker to 0.4 added, 60 frames; fast scale 0.01), independent fits / jaw left out at 1000 /
    # 1500 / 2000 / 3000: seed 0 0.0094 / 0.0095 / 0.0079 / 0.0072 / 0.0066; seed 1 0.0120 / 0.0132 /
    # 0.0105 / 0.0090 / -; smile clip 0.0183 / 0.0177 / 0.0174 / 0.0176 / 0.0182, where the smile's own
    # error grows with it (0.187 independent, 0.175 / 0.196 / 0.214 / 0.236): 1500, better than the
    # independent fits on all three, the smile's cost small. Seed 0 at 1500: jawOpen 0.133, eyeBlink
    # 0.107, jitter 0.270 mm (independent 0.142 / 0.133 / 1.122).
    ordered_exp_l1: Optional[float] = 1500.0
    ordered_exp_l1_exclude: Optional[tuple] = ("eyeBlink", "jawOpen")
    # The UV albedo merged from every view (fitting.stages.view_texture), exposed like the detail view
    # (the first of ``detail``, else the most frontal view) and put on identity.obj; None: no texture.
    texture: Optional[ViewTextureSettings] = field(default_factory=ViewTextureSettings)
    # Views that get the single-view medium and fine stages' detail (shape from shading, its own
    # texture), started from the joint fit's identity, pose and expression: view names, "frontal"
    # (the view with the smallest yaw^2 + pitch^2 of the fit: SfS sees both cheeks there), or ()
    # for none. Each costs a single-view fine fit (about 6 s on this 2-core machine).
    detail: Tuple[str, ...] = ("frontal",)
    # Every view's medium mesh (frame_meshes: the medium stage on the view's joint face, toward its own
    # landmarks), written as frames/NAME.ply and shown in the overlays. Off by default: a mesh per frame
    # is 0.4 MB on disk; the stage costs about 0.03 s per view once its influence fields are built
    # (1.4 s, once per process; fitting.stages.medium.INFLUENCE_MIN_FACES).
    frame_meshes: bool = False


@dataclass
class JointFit:
    """The joint fit of N views of one person. Shapes: N views, V vertices.

    ``camera``: the views' crop cameras (pose fitted here, model -> camera); ``id_coeffs`` (n_id,)
    shared; ``exp_coeffs`` (N, n_exp); ``neutral`` (V, 3) mm, model frame: the identity with no
    expression; ``vertices`` (N, V, 3) each view's face (identity + its expression), model frame;
    ``landmark_error`` (N,) mean reprojection error in crop pixels over the weighted landmarks;
    ``single_id_coeffs`` (N, n_id) and ``disagreement_mm`` (N,): each view's own single-view
    identity and the mean distance of its neutral mesh from the joint least squares' (``neutral`` before
    the photometric polish; None: not checked);
    ``landmark_trust`` (N,), ``points68`` (N, 68, 2) crop px and ``weights68`` (N, 68): MediaPipe's trust,
    the regressor's points and their weights per view when the regressor was fused
    (:mod:`fitting.stages.fusion`; None otherwise).
    """

    camera: Camera
    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    neutral: torch.Tensor
    vertices: torch.Tensor
    landmark_error: torch.Tensor
    single_id_coeffs: Optional[torch.Tensor] = None
    disagreement_mm: Optional[torch.Tensor] = None
    seconds: float = 0.0
    landmark_trust: Optional[torch.Tensor] = None
    points68: Optional[torch.Tensor] = None
    weights68: Optional[torch.Tensor] = None
    landmark_offsets: Optional[torch.Tensor] = None

    def coarse_result(self, index: torch.Tensor):
        """The views ``index`` (a (K,) index tensor) as a single-view coarse stage's result
        (:class:`fitting.stages.coarse.CoarseResult`), for the single-view medium and fine stages."""
        from .coarse import CoarseResult
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return CoarseResult(camera=self.camera[index], vertices=self.vertices[index],
                            id_coeffs=self.id_coeffs.expand(len(index), -1), exp_coeffs=self.exp_coeffs[index],
                            landmark_error=self.landmark_error[index], landmark_offsets=pick(self.landmark_offsets),
                            landmark_trust=pick(self.landmark_trust), points68=pick(self.points68),
                            weights68=pick(self.weights68))


def detail_views(names: Sequence[str], euler_deg: torch.Tensor, choice: Sequence[str]) -> Tuple[List[int], List[str]]:
    """The indices of the views ``choice`` names (SamePersonSettings.detail), in the order given, each once:
    a view's name, or "frontal" for the view with the smallest yaw^2 + pitch^2 (``euler_deg`` (N, 3) yaw,
    pitch, roll); and the names in ``choice`` that are no view's (left out: a photo skipped for want of a
    face, a typo)."""
    out, unknown = [], []
    for c in choice:
        if c == "frontal":
            i = int(euler_deg[:, :2].pow(2).sum(1).argmin())
        elif c in names:
            i = list(names).index(c)
        else:
            unknown.append(c)
            continue
        if i not in out:
            out.append(i)
    return out, unknown


def solve_shared_shape(lb: LandmarkBasis, uv: torch.Tensor, weights: torch.Tensor, intrinsics: torch.Tensor,
                       rot: torch.Tensor, t: torch.Tensor, lambda_id: float, lambda_exp: float,
                       prev_coeffs: torch.Tensor, exp_bounds=(0.0, 1.0), active_set_rounds: int = 10,
                       frozen: Optional[torch.Tensor] = None, lambda_temporal=0.0, lambda_exp_l1=0.0,
                       fixed_id: Optional[torch.Tensor] = None):
    """Regularised least squares for one identity and N expressions with the N poses fixed.

    ``uv`` (N, K, 2) pixels, ``weights`` (N, K), ``intrinsics`` (N, 4), ``rot`` (N, 3, 3), ``t`` (N, 3),
    ``prev_coeffs`` (N, n) where each point's depth is linearised (identity modes first, as in ``lb``).
    ``frozen`` (n,) bool: coefficients held at zero. ``lambda_temporal``, a number or (n_exp,) one per
    expression: the views are consecutive frames; ``sum_j lambda_temporal[j] (a_exp[v+1, j] - a_exp[v, j])^2``
    is added for each v (a block-tridiagonal term in the expression blocks). ``lambda_exp_l1``, a number or
    (n_exp,): the expressions' L1 prior, per view, as in :func:`fitting.stages.landmark_fit.solve_shape` (as is
    the active set, which frees a pinned activation whose gradient points back into the bounds).
    ``fixed_id`` (n_id,): a known identity, held; only the expressions are solved (the bench's oracle rows).
    Returns ``(a_id (n_id,), a_exp (N, n_exp))``.
    """
    nv, n, n_id = uv.shape[0], lb.basis.shape[-1], lb.n_id
    m = n - n_id
    dtype, dev = uv.dtype, uv.device
    a, rhs = shape_rows(lb, uv, weights, intrinsics, rot, t, prev_coeffs)
    a64, rhs64 = a.double(), rhs.double()  # float64: the pinning penalty makes the system stiff
    ata = a64.transpose(1, 2) @ a64  # (N, n, n): each view's normal equations
    atb = (a64.transpose(1, 2) @ rhs64[..., None])[..., 0]  # (N, n)
    f64 = ata.dtype
    scale = torch.diagonal(ata, dim1=1, dim2=2).mean(-1)  # (N,) typical diagonal, for the penalties
    reg_exp = torch.full((nv, m), float(lambda_exp), dtype=f64, device=dev)
    reg_id = torch.full((n_id,), float(lambda_id), dtype=f64, device=dev)
    if frozen is not None:
        fz = frozen.to(dev)
        reg_exp = reg_exp + 1e3 * scale[:, None] * fz[n_id:].to(f64)
        reg_id = reg_id + 1e3 * scale.mean() * fz[:n_id].to(f64)
    m_ii = ata[:, :n_id, :n_id].sum(0) + torch.diag(reg_id)
    m_ei = ata[:, n_id:, :n_id]  # (N, m, n_id): each view's expression-identity block
    m_ee = ata[:, n_id:, n_id:]  # (N, m, m): the expression blocks (block diagonal without the temporal term)
    lam_t = torch.as_tensor(lambda_temporal, dtype=f64, device=dev).expand(m) * float(nv > 1)  # (m,)
    if bool((lam_t > 0).any()):  # the path graph's degree on the diagonal blocks; -diag(lam_t) couples v, v+1
        degree = torch.full((nv,), 2.0, dtype=f64, device=dev)
        degree[0] = degree[-1] = 1.0
        m_ee = m_ee + degree[:, None, None] * torch.diag(lam_t)
    b_id, b_exp = atb[:, :n_id].sum(0), atb[:, n_id:]
    linear = 0.5 * torch.as_tensor(lambda_exp_l1, dtype=f64, device=dev).expand(m)  # the L1 term, linear in a_exp >= 0
    if frozen is not None:
        linear = torch.where(frozen.to(dev)[n_id:], torch.zeros_like(linear), linear)
    b_exp = b_exp - linear
    lo, hi = exp_bounds
    pinned = torch.zeros(nv, m, dtype=torch.bool, device=dev)
    pin_value = torch.zeros(nv, m, dtype=f64, device=dev)
    big = 1e4 * scale.clamp_min(1.0)[:, None]  # (N, 1)
    a_id64 = e = None
    for _ in range(active_set_rounds + 1):
        diag_blocks = m_ee + torch.diag_embed(reg_exp + big * pinned)
        rhs_e = b_exp + big * pinned * pin_value
        # Schur complement on the identity: X = M_ee^-1 [M_ei | b_e], then
        # (M_ii - M_ie X_i) a_id = b_i - M_ie X_b and a_exp = X_b - X_i a_id.
        x = _solve_block_tridiagonal(diag_blocks, lam_t, torch.cat([m_ei, rhs_e[..., None]], -1))
        x_i, x_b = x[..., :n_id], x[..., n_id]
        if fixed_id is not None:
            a_id64 = fixed_id.to(dev, f64)
        else:
            schur = m_ii - torch.einsum("vai,vaj->ij", m_ei, x_i)
            a_id64 = solve_spd(schur[None], (b_id - torch.einsum("vai,va->i", m_ei, x_b))[None])[0]
        e = x_b - x_i @ a_id64
        out = ((e < lo) | (e > hi)) & ~pinned
        # the expressions' gradient without the pinning (half of it), to free a pinned one that points inward
        grad = (torch.einsum("vab,vb->va", m_ee + torch.diag_embed(reg_exp), e)
                + torch.einsum("vai,i->va", m_ei, a_id64) - b_exp)
        if bool((lam_t > 0).any()):
            grad[1:] -= lam_t * e[:-1]
            grad[:-1] -= lam_t * e[1:]
        release = pinned & (((pin_value <= lo) & (grad < 0)) | ((pin_value >= hi) & (grad > 0)))
        if not bool(out.any()) and not bool(release.any()):
            break
        pin_value = torch.where(out, e.clamp(lo, hi), pin_value)
        pinned = (pinned | out) & ~release
    return a_id64.to(dtype), e.to(dtype).clamp(lo, hi)


def view_agreement(points: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, uv: torch.Tensor,
                   intrinsics: torch.Tensor, weights: torch.Tensor, scale_mm: float) -> torch.Tensor:
    """(N, K) factors in (0, 1] on the landmark weights of N views of one face: how well each view's residual
    at a point agrees with the other views' at the same point.

    ``points`` (N, K, 3) model frame mm (the fit's landmark points in each view), ``rot`` (N, 3, 3) and ``t``
    (N, 3) model -> camera, ``uv`` (N, K, 2) the targets (crop px), ``intrinsics`` (N, 4), ``weights`` (N, K)
    (> 0: the point counts in that view). Each residual (projected minus target) is lifted to the model frame
    at its point's depth: the offset in view v's image plane, mm, rotated back, which is ``P_v d`` for a 3D
    offset d (``P_v = R_v^T diag(1, 1, 0) R_v``, the part of d the view sees). Per point, the one 3D offset d
    that best explains the views that count it (least squares over the views, a small ridge for depth that no
    view sees); ``e`` = the distance of a view's lifted residual from ``P_v d``; factor
    ``1 / (1 + (e / scale_mm)^2)``.
    """
    res = reprojection_residual(points, rot, t, uv, intrinsics)  # (N, K, 2) px
    depth = -(torch.einsum("bij,bkj->bki", rot, points) + t[:, None])[..., 2]  # (N, K) mm in front of the camera
    fx, fy = intrinsics[:, None, 0], intrinsics[:, None, 1]
    lifted_cam = torch.stack([res[..., 0] * depth / fx, -res[..., 1] * depth / fy, torch.zeros_like(depth)], -1)
    lifted = torch.einsum("bji,bkj->bki", rot, lifted_cam)  # R^T: (N, K, 3) model frame, mm
    plane = rot.transpose(1, 2) @ torch.diag(lifted.new_tensor([1.0, 1.0, 0.0])) @ rot  # (N, 3, 3) P_v
    seen = (weights > 0).to(lifted)  # (N, K)
    normal = torch.einsum("vk,vij->kij", seen, plane) + 1e-3 * torch.eye(3, dtype=lifted.dtype, device=lifted.device)
    shared = torch.linalg.solve(normal, torch.einsum("vk,vki->ki", seen, lifted))  # (K, 3): P_v lifted = lifted
    spread = (lifted - torch.einsum("vij,kj->vki", plane, shared)).norm(dim=-1)  # (N, K) mm
    return 1.0 / (1.0 + (spread / scale_mm) ** 2)


def _solve_block_tridiagonal(diag: torch.Tensor, coupling, rhs: torch.Tensor) -> torch.Tensor:
    """Solve the symmetric positive definite block-tridiagonal system with diagonal blocks ``diag``
    (N, m, m) and ``-diag(coupling)`` between consecutive blocks (``coupling`` a number or (m,)), for
    ``rhs`` (N, m, k): (N, m, k).

    ``coupling`` all 0: N independent blocks, one batched Cholesky. Otherwise block elimination
    (the block Thomas algorithm): one m x m solve per frame, forward, then products back, O(N m^3) instead of
    the O(N^3 m^3) of the whole matrix (300 frames: 16,000 unknowns).
    """
    n, m = diag.shape[:2]
    c = torch.as_tensor(coupling, dtype=diag.dtype, device=diag.device).expand(m)
    if not bool((c != 0).any()):
        chol = torch.linalg.cholesky(diag)
        return torch.cholesky_solve(rhs, chol)
    c_col = c[:, None]
    schur, y, inv = diag[0], rhs[0], []
    for v in range(1, n):  # eliminate block v - 1 from row v, with C = -diag(c)
        inv.append(torch.linalg.solve(schur, torch.cat([torch.diag(c), y], 1)))  # S^-1 [diag(c) | y]
        schur = diag[v] - c_col * inv[-1][:, :m]
        y = rhs[v] + c_col * inv[-1][:, m:]
    # back substitution: x_v = S_v^-1 (y_v + c x_v+1) = S_v^-1 y_v + S_v^-1 diag(c) x_v+1, both products
    # already formed by the forward pass (one m x m solve per frame in all, not two)
    x = [torch.linalg.solve(schur, y)]
    for v in range(n - 2, -1, -1):
        x.append(inv[v][:, m:] + inv[v][:, :m] @ x[-1])
    return torch.stack(x[::-1])


def fit_same_person(model: MorphableModel, batch: DetectionBatch, corr: Correspondence,
                    settings: Optional[SamePersonSettings] = None, renderer=None, ordered: bool = False,
                    init: Optional[CoarseInit] = None, id_coeffs: Optional[torch.Tensor] = None) -> JointFit:
    """N detected views of one person (``batch``, B = N) -> one identity and each view's pose and expression.

    Steps 1-3 of the module doc, with the coarse stage's landmark weights and yaw-dependent
    landmark offsets; step 4 with ``settings.photometric`` and a ``renderer``
    (:class:`fitting.rendering.renderer.Renderer`). ``ordered``: the views are consecutive frames
    of one video, in order: ``settings.lambda_temporal_exp`` applies. With ``settings.check_disagreement``
    (``check_disagreement_ordered`` for a video's frames) each view is also fitted alone
    (:func:`fitting.stages.coarse.fit_landmarks`) and its neutral
    mesh compared with the joint least squares' (``JointFit.disagreement_mm``).

    ``init`` (:func:`fitting.stages.coarse.initial_guess` of the batch, as the coarse stage gets it): each
    view's start pose, and with ``init.points68`` and ``settings.coarse.fusion.enabled`` the regressor's
    68 points join every view's landmarks as in the single-view fit (:mod:`fitting.stages.fusion`: MediaPipe
    weighted by its per-view trust; views MediaPipe missed are read from the regressor alone). Its
    coefficients, if any, are not used: one identity is solved for all views.

    ``id_coeffs`` (n_id,): a known identity, held throughout (poses and expressions are fitted to it; the
    bench's oracle rows: how much of the expressions' error is the shared identity's).
    """
    settings = settings or SamePersonSettings()
    cs = settings.coarse
    t0 = time.perf_counter()
    dev = model.device
    uv, k = batch.uv.to(dev), batch.intrinsics.to(dev)
    nv = uv.shape[0]
    n_id, n_exp = cs.n_id, model.n_exp
    lb = LandmarkBasis.from_model(model, corr.vertex_ids.to(dev), corr.bary.to(dev), n_id=n_id)
    coeffs = torch.zeros(nv, n_id + n_exp, device=dev)
    fixed_id = None
    if id_coeffs is not None:
        fixed_id = id_coeffs.to(dev, torch.float32).reshape(-1)[:n_id]
        coeffs[:, :n_id] = fixed_id
    use_offsets = cs.landmark_offsets and corr.has_offsets
    lambda_id = cs.lambda_id if settings.lambda_id is None else settings.lambda_id
    temporal = 0.0
    if ordered:  # per expression: the fast eye shapes get a lighter hand
        fast = torch.tensor([name.startswith(settings.temporal_fast) for name in model.exp_names], device=dev)
        temporal = settings.lambda_temporal_exp * torch.where(fast, settings.temporal_fast_scale, 1.0)

    def at_pose(rotation):
        if not use_offsets:
            return lb
        return lb.shifted(corr.offsets_at(matrix_to_euler(rotation)[0]).to(dev))

    w = landmark_weights(batch, corr, cs).to(dev)
    rot, t, fuse = start_pose_and_fusion(model, batch, corr, cs, init, lb.points(coeffs), w)
    lb_all, uv_all, w_all = fused_targets(fuse, at_pose(rot), uv, w)
    rot, t = refine_pose(lb_all.points(coeffs), uv_all, w_all, k, rot, t, cs.pose_iterations)
    frozen = torch.zeros(n_id + n_exp, dtype=torch.bool, device=dev)
    frozen[n_id:] = excluded_expressions(model, cs).to(dev)
    l1_settings = cs
    if ordered and (settings.ordered_exp_l1 is not None or settings.ordered_exp_l1_exclude is not None):
        l1_settings = dataclasses.replace(
            cs, lambda_exp_l1=cs.lambda_exp_l1 if settings.ordered_exp_l1 is None else settings.ordered_exp_l1,
            exp_l1_exclude=(cs.exp_l1_exclude if settings.ordered_exp_l1_exclude is None
                            else settings.ordered_exp_l1_exclude))
    l1 = exp_l1_weights(model, l1_settings).to(dev)
    for step in range(cs.alternations):
        w = landmark_weights(batch, corr, cs, rot).to(dev)
        lb_all, uv_all, w_all = fused_targets(fuse, at_pose(rot), uv, w)
        if step > 0 and settings.agreement_mm and nv > 1 and not ordered:  # the previous solve's residuals
            w_all = w_all * view_agreement(lb_all.points(coeffs), rot, t, uv_all, k, w_all, settings.agreement_mm)
        a_id, a_exp = solve_shared_shape(lb_all, uv_all, w_all, k, rot, t, lambda_id, cs.lambda_exp, coeffs,
                                         exp_bounds=cs.exp_bounds, frozen=frozen,
                                         lambda_temporal=temporal, lambda_exp_l1=l1, fixed_id=fixed_id)
        coeffs = torch.cat([a_id.expand(nv, -1), a_exp], 1)
        rot, t = refine_pose(lb_all.points(coeffs), uv_all, w_all, k, rot, t, cs.pose_iterations)
    lb_pose = at_pose(rot)
    err = reprojection_residual(lb_pose.points(coeffs), rot, t, uv, k).norm(dim=-1)
    wmask = (w > 0).to(err)
    camera = Camera(intrinsics=k, rotation=rot, translation=t, height=batch.size, width=batch.size)
    id_coeffs, exp_coeffs = coeffs[0, :n_id], coeffs[:, n_id:]
    least_squares_id = id_coeffs  # what the disagreement check compares each view's own least squares with
    landmark_error = (err * wmask).sum(1) / wmask.sum(1)
    offsets = None if lb_pose is lb else lb_pose.mean - lb.mean
    trust, points68, weights68 = (None, None, None) if fuse is None else (fuse.trust, fuse.uv, fuse.weights)
    if settings.photometric and renderer is not None and (settings.photometric_video or not ordered):
        from .coarse import CoarseResult
        from .photometric import photometric_refine
        joint = CoarseResult(camera=camera, vertices=model(coeffs[:, :n_id], exp_coeffs), id_coeffs=coeffs[:, :n_id],
                             exp_coeffs=exp_coeffs, landmark_error=landmark_error, landmark_offsets=offsets,
                             landmark_trust=trust, points68=points68, weights68=weights68)
        polish = dataclasses.replace(cs, photometric_steps=settings.polish_steps,
                                     photometric_erode_px=settings.polish_erode_px,
                                     photometric_outlier_ratio=settings.polish_outlier_ratio)
        per_view = 1.0 / nv if settings.polish_landmarks_as_one_view else 1.0
        joint = photometric_refine(model, batch, corr, joint, polish, renderer, shared_identity=True,
                                   landmark_scale=per_view * settings.polish_landmark_scale,
                                   id_prior_scale=settings.polish_id_prior_scale)
        camera, id_coeffs, exp_coeffs = joint.camera, joint.id_coeffs[0], joint.exp_coeffs
        landmark_error = joint.landmark_error
    neutral = model(id_coeffs[None], torch.zeros(1, n_exp, device=dev))[0]
    fit = JointFit(camera=camera, id_coeffs=id_coeffs, exp_coeffs=exp_coeffs, neutral=neutral,
                   vertices=model(id_coeffs.expand(nv, -1), exp_coeffs), landmark_error=landmark_error,
                   landmark_trust=trust, points68=points68, weights68=weights68, landmark_offsets=offsets)
    if settings.check_disagreement_ordered if ordered else settings.check_disagreement:
        single = fit_landmarks(model, batch, corr, cs, init)
        fit.single_id_coeffs = single.id_coeffs
        fit.disagreement_mm = identity_distance(model, single.id_coeffs, least_squares_id)
    fit.seconds = time.perf_counter() - t0
    return fit


def identity_distance(model: MorphableModel, id_coeffs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) mean distance (mm, model frame, over all vertices) between the neutral meshes of
    ``id_coeffs`` (B, k) and of ``reference`` (k,). No alignment: both are the model's own frame."""
    zeros = torch.zeros(id_coeffs.shape[0], model.n_exp, device=id_coeffs.device)
    meshes = model(id_coeffs, zeros)
    ref = model(reference[None], zeros[:1])
    return (meshes - ref).norm(dim=-1).mean(-1)


def frame_meshes(model: MorphableModel, batch: DetectionBatch, corr: Correspondence, fit: JointFit,
                 settings=None, renderer=None, chunk: int = 64) -> torch.Tensor:
    """(N, V, 3) mm, model frame: each view's medium mesh, the medium stage (:mod:`fitting.stages.medium`,
    eq. 2-3) run on the view's face of the joint fit (the identity with the view's expression, at its pose)
    toward the view's own landmarks in ``batch`` (N crops). ``settings``: a
    :class:`fitting.stages.medium.MediumSettings` (None: the defaults); ``renderer``: needed only for its
    ``index_map`` correspondence. ``chunk`` views at a time (a 300-frame video's meshes in float64 would
    take 200 MB at once); with the table correspondence every chunk shares the landmarks' influence fields."""
    from . import medium
    from .context import FitContext
    settings = settings or medium.MediumSettings()
    context = FitContext(model=model, correspondence=corr, renderer=renderer, device=fit.vertices.device,
                         settings={"medium": settings})
    n = len(fit.vertices)
    out = [medium.run(context, batch[s:s + chunk], fit.coarse_result(torch.arange(s, min(n, s + chunk),
                                                                                    device=fit.vertices.device))).vertices
           for s in range(0, n, chunk)]
    return torch.cat(out)
