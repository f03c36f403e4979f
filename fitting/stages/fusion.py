"""Whom the coarse stage trusts: MediaPipe's dense points, the regressor's 68 points, or both.

MediaPipe's 478 points carry dense detail (lids, lips, nose) and are good on frontal faces, but
past about 60 degrees of yaw its whole mesh can sit in the wrong place. 3DDFA_V2's 68 points
(:class:`fitting.stages.initializers.RegressorInitializer`) are coarser but hold at every pose, and
they are the model's own 3D points (the jaw is the 3D jaw, not the silhouette). The rule, per face
``b`` and per point:

1. MediaPipe's face trust ``t_b`` in [0, 1] is the product of two ramps (each 1 below its first
   threshold, 0 above its second, linear between):

   - the head's |yaw| as the regressor sees it (``yaw_full_deg`` -> ``yaw_zero_deg``): the pose where
     MediaPipe's mesh stops being reliable, whatever it says;
   - the disagreement between MediaPipe's points at the 68 iBUG places (:func:`mediapipe_to_68`)
     and the regressor's, on the 51 inner points (the jaw left out: MediaPipe's contour follows the
     silhouette by design), as the mean distance over the size of the regressor's box
     (``disagree_full`` -> ``disagree_zero``): a MediaPipe mesh that landed on the wrong place.

   Every MediaPipe point's coarse-stage weight is multiplied by ``t_b`` (and so are the medium
   stage's targets: :attr:`fitting.stages.coarse.CoarseResult.landmark_trust`).
2. The regressor's 68 points are extra landmarks on the model's ``multipie68`` vertices, each with
   weight ``regressor_weight`` (jaw points ``regressor_jaw_weight``, faded with yaw as MediaPipe's
   contour is: the far half of a turned head's jaw is hidden, and guessed), times ``(1 - t_b)`` (plus
   ``regressor_share_when_trusted * t_b``): where MediaPipe is trusted its ~470 dense points carry the
   shape and the regressor gives only the start pose (its points, another face model's 68 placed by a
   network, pull the identity toward their own offsets: measured in :class:`FusionSettings`); where it
   is not (``t_b`` = 0) the face is fitted from them alone.

The photometric polish keeps both (:func:`fitting.stages.photometric.photometric_refine`). The medium
stage follows ``t_b`` only: its targets are MediaPipe's points, weighted by the trust. Tried and left
out: the regressor's 68 points as medium targets of their vertices too (weight 0.1 / 0.3 / 1 of their
coarse weight), `bench align --faces 8` medium NME 2.83 / 3.38 / 3.29 % (yaw 0-30 / 30-60 / 60-90)
-> 3.41 / 4.30 / 5.08 at 0.1: the medium stage moves vertices one by one, and the regressor's
single points are noisier (4.0 / 5.5 / 6.4 %) than the fused coarse fit (2.4 / 3.1 / 3.3 %).

MediaPipe's face presence score is used only as found / not found: the detector keeps only faces above
its threshold and does not hand the score on; a face it scored low but kept is caught by the
disagreement instead. A face it dropped (near profiles: presence 0.001-0.05) but whose box a detector
found is read by the regressor alone (:mod:`fitting.regressor_faces`); its ``DetectionBatch.mediapipe_weight``
is 0, and ``t_b`` is multiplied by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

if TYPE_CHECKING:
    from morphable import MorphableModel

    from .correspondence import Correspondence

N68 = 68
JAW68 = slice(0, 17)  # iBUG 0-16: the jaw line
INNER68 = slice(17, 68)  # iBUG 17-67: brows, nose, eyes, mouth


@dataclass
class FusionSettings:
    """How the coarse stage weighs MediaPipe against the regressor (module docstring). Used only when
    the initialiser hands the regressor's 68 points on (``CoarseInit.points68``)."""

    enabled: bool = True
    # Weight of each regressor point (dimensionless, against a MediaPipe point of group weight 1; about
    # 470 MediaPipe points have weights 0.5-1). Measured on `bench align --faces 8` (seed 0), coarse
    # least squares, NME % in yaw bins 0-30 / 30-60 / 60-90: weight 0.5 -> 2.63 / 3.40 / 3.11,
    # 1 -> 2.47 / 3.25 / 3.21, 2 -> 2.37 / 3.10 / 3.29, 3 -> 2.41 / 3.05 / 3.35 (no fusion: 2.94 /
    # 3.69 / 10.01). 2: the best mean; the regressor's points then carry about a quarter of the weight.
    # (Measured when these weights applied on every face; they now apply as MediaPipe's trust falls,
    # regressor_share_when_trusted below.)
    # Its price on `bench photos` (8 shared photos, error against MediaPipe's own points, % of the
    # inter-ocular distance, which is not an error against any truth): coarse 2.11 -> 2.71, medium
    # 0.93 -> 1.07; the fit leaves MediaPipe's points for the regressor's where they differ.
    regressor_weight: float = 2.0
    regressor_jaw_weight: float = 2.0
    # The share of those weights kept where MediaPipe is fully trusted (its trust t: the weights times
    # share * t + (1 - t)). The regressor's points are not the model's multipie68 vertices exactly (its
    # own face model's 68 points, placed by a network): every weight on them pulls the identity toward
    # their systematic offsets. Measured on 20 synthetic faces (seed 0, |yaw| <= 45, the coarse least
    # squares' identity error, mean per-vertex mm): no regressor 3.21; its pose only 3.21; fused at full
    # weight 2 -> 3.88 (21 % worse), 1 -> 3.45, 0.5 -> 3.30, 0.25 -> 3.24, 0 -> 3.21. So where MediaPipe
    # is trusted its dense points carry the shape and the regressor gives the pose start; where it is not
    # (profiles, a mesh in the wrong place) the regressor's points carry the fit.
    regressor_share_when_trusted: float = 0.0
    # The regressor's jaw points fade with the head's yaw as cos(yaw) ** power (as MediaPipe's contour
    # does, CoarseSettings.contour_yaw_power): on a turned head the far half of the jaw is hidden and the
    # regressor guesses it. Measured (weight 1): no fade 2.47 / 3.49 / 5.89, power 2 -> 2.47 / 3.22 / 3.86,
    # 4 -> 2.47 / 3.25 / 3.21, 8 -> 2.49 / 3.35 / 3.05, jaw weight 0 -> 2.67 / 3.40 / 3.12.
    regressor_jaw_yaw_power: float = 4.0
    # |yaw| in degrees (the regressor's pose) where MediaPipe is fully trusted / not at all: on
    # synthetic faces its NME is flat to about 45 degrees and its mesh breaks past about 60.
    yaw_full_deg: float = 45.0
    yaw_zero_deg: float = 70.0
    # Inner-point disagreement between MediaPipe and the regressor, as a fraction of the regressor's
    # box size sqrt(w h): below ``disagree_full`` both read the same face (their own errors are 2-5 %
    # each), above ``disagree_zero`` MediaPipe's mesh is somewhere else.
    disagree_full: float = 0.06
    disagree_zero: float = 0.15


def _ramp(x: torch.Tensor, full: float, zero: float) -> torch.Tensor:
    """1 at or below ``full``, 0 at or above ``zero``, linear between."""
    return ((zero - x) / max(zero - full, 1e-9)).clamp(0.0, 1.0)


_MP68: Dict[Tuple[int, int], Tuple[object, object, torch.Tensor]] = {}  # (model, corr) ids -> (model, corr, map)


def _mediapipe_to_68(model, corr) -> torch.Tensor:
    from landmarks.indices import GROUP_NAMES, point_groups
    groups = torch.as_tensor(point_groups())
    usable = corr.valid.cpu().bool() & (groups != GROUP_NAMES.index("iris"))
    mean = model.mean.detach().cpu().float()
    table = corr.points(mean[None])[0]  # (K, 3) mm, the table's surface points on the mean face
    target = mean[model.landmark_sets["multipie68"].cpu()]  # (68, 3)
    dist = torch.cdist(target, table.float())
    dist[:, ~usable] = math.inf
    return dist.argmin(1)


def mediapipe_to_68(model: "MorphableModel", corr: "Correspondence") -> torch.Tensor:
    """(68,) int64: for each iBUG point (the model's ``multipie68`` vertices), the MediaPipe landmark
    whose correspondence-table surface point on the mean face is nearest in 3D (valid, non-iris
    points only). How MediaPipe's 478 points are read as 68."""
    key = (id(model), id(corr))
    if key not in _MP68 or _MP68[key][0] is not model or _MP68[key][1] is not corr:
        _MP68[key] = (model, corr, _mediapipe_to_68(model, corr))
    return _MP68[key][2]


def box_size(points: torch.Tensor) -> torch.Tensor:
    """(B,) sqrt(w h) of the bounding box of ``points`` (B, N, 2) (pixels)."""
    span = points.amax(1) - points.amin(1)
    return span.prod(-1).clamp_min(1e-9).sqrt()


def mediapipe_trust(uv: torch.Tensor, points68: torch.Tensor, yaw_deg: torch.Tensor, mp68: torch.Tensor,
                    settings: FusionSettings) -> torch.Tensor:
    """(B,) MediaPipe's face trust in [0, 1] (module docstring, rule 1).

    ``uv`` (B, 478, 2) MediaPipe's points and ``points68`` (B, 68, 2) the regressor's, both crop pixels;
    ``yaw_deg`` (B,) the regressor's head yaw in degrees; ``mp68`` (68,) :func:`mediapipe_to_68`."""
    mp = uv[:, mp68.to(uv.device)]
    gap = (mp[:, INNER68] - points68[:, INNER68]).norm(dim=-1).mean(1) / box_size(points68)
    return _ramp(yaw_deg.abs(), settings.yaw_full_deg, settings.yaw_zero_deg) * \
        _ramp(gap, settings.disagree_full, settings.disagree_zero)


def regressor_weights(yaw_deg: torch.Tensor, settings: FusionSettings,
                      trust: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, 68) the regressor's point weights (module docstring, rule 2); ``yaw_deg`` (B,) its head yaw;
    ``trust`` (B,) MediaPipe's face trust (:func:`mediapipe_trust`; None: 0, the regressor's full weight)."""
    w = torch.full((len(yaw_deg), N68), float(settings.regressor_weight), dtype=torch.float32,
                   device=yaw_deg.device)
    fade = torch.cos(torch.deg2rad(yaw_deg.float())).clamp_min(0.0) ** settings.regressor_jaw_yaw_power
    w[:, JAW68] = float(settings.regressor_jaw_weight) * fade[:, None]
    if trust is not None:
        t = trust.to(w)[:, None]
        w = w * (settings.regressor_share_when_trusted * t + (1.0 - t))
    return w


def points68_basis_inputs(model: "MorphableModel") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(vertex_ids (68, 3), bary (68, 3))`` of the model's ``multipie68`` vertices, in the form
    :meth:`fitting.stages.landmark_fit.LandmarkBasis.from_model` takes (each point one vertex)."""
    ids = model.landmark_sets["multipie68"].to(model.device).long()
    bary = torch.zeros(N68, 3, device=model.device)
    bary[:, 0] = 1.0
    return ids[:, None].expand(N68, 3).contiguous(), bary
