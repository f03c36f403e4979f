"""Coarse stage, part 1: pose and 3DMM coefficients from 2D landmarks by regularised least squares.

METHOD.md, coarse stage: (1) rigid pose by an affine (weak-perspective)
linear solve, refined under perspective by Gauss-Newton; (2) with the pose
fixed the projection residuals are linear in (a_id, a_exp) after
multiplying through by the depth, so the Tikhonov-regularised normal
equations give the shape; expression activations are kept in [0, 1] by an
active-set re-solve; (3) alternate.

All functions are batched over B images and run on the tensors' device.
Frames: model frame (mm) -> camera frame by ``X_cam = R X + t``; pixels via
:mod:`sfs.projection`. Residuals are measured in "normalised pixels":
pixels scaled so the landmark set is 200 px across, which makes the
regularisation weights independent of the photo's resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from landmarks.indices import GROUP_NAMES
from morphable import MorphableModel
from sfs.projection import camera_to_pixel, camera_to_pixel_jacobian, pixel_to_camera

from ..rotation import axis_angle_to_matrix, matrix_to_euler

if TYPE_CHECKING:
    from ..detections import DetectionBatch
    from .coarse import CoarseSettings
    from .correspondence import Correspondence

NORMALISED_SIZE = 200.0  # px: landmark spread that residuals are scaled to


@dataclass
class LandmarkBasis:
    """The model restricted to K landmark surface points (barycentric combinations of vertices).

    ``mean`` (K, 3) mm, or (B, K, 3) when each face's points are offset
    differently (:meth:`shifted`); ``basis`` (K, 3, n) mm per unit coefficient
    with the identity modes first, then the expression modes; ``n_id`` tells
    where the split is.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    n_id: int

    @classmethod
    def from_model(cls, model: MorphableModel, vertex_ids: torch.Tensor, bary: torch.Tensor,
                   n_id: Optional[int] = None) -> "LandmarkBasis":
        """``vertex_ids`` (K, 3) int64, ``bary`` (K, 3): point k = sum_j bary[k, j] * vertex[vertex_ids[k, j]]."""
        n_id = model.n_id if n_id is None else n_id
        b = bary.to(model.mean)
        mean = (model.mean[vertex_ids] * b[..., None]).sum(1)
        full = torch.cat([model.id_basis[:n_id], model.exp_basis], 0)  # (n, V, 3)
        basis = (full[:, vertex_ids] * b[None, ..., None]).sum(2)  # (n, K, 3)
        return cls(mean=mean, basis=basis.permute(1, 2, 0).contiguous(), n_id=n_id)

    def points(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(B, n) coefficients -> (B, K, 3) model-frame points."""
        return self.mean + torch.einsum("kcn,bn->bkc", self.basis, coeffs)

    def shifted(self, offsets: torch.Tensor) -> "LandmarkBasis":
        """The same basis with every point moved by ``offsets`` (K, 3) or (B, K, 3) mm, model frame
        (the points MediaPipe sees at a pose: :meth:`fitting.stages.correspondence.Correspondence.offsets_at`)."""
        return LandmarkBasis(mean=self.mean + offsets.to(self.mean), basis=self.basis, n_id=self.n_id)


def landmark_weights(batch: "DetectionBatch", corr: "Correspondence", settings: "CoarseSettings",
                     rotation: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, K) weights: group weight x validity, contour points faded by cos(yaw)^p.

    ``settings``: the coarse stage's ``group_weights`` and ``contour_yaw_power``; ``rotation``
    (B, 3, 3) the fitted pose (None: no fading)."""
    table = torch.tensor([settings.group_weights.get(n, 1.0) for n in GROUP_NAMES], dtype=torch.float32,
                         device=batch.uv.device)
    w = table[batch.groups] * corr.valid.to(batch.uv)
    w = w[None].expand(len(batch), -1).clone()
    if rotation is not None:
        yaw = matrix_to_euler(rotation)[0] * (math.pi / 180.0)
        fade = torch.cos(yaw).clamp_min(0.0) ** settings.contour_yaw_power
        contour = batch.groups == GROUP_NAMES.index("contour")
        w[:, contour] = w[:, contour] * fade[:, None]
    return w


def excluded_expressions(model: MorphableModel, settings: "CoarseSettings") -> torch.Tensor:
    """(n_exp,) bool: the blendshapes left out of the fit, named by ``settings.exp_exclude`` (name prefixes)."""
    return torch.tensor([name.startswith(settings.exp_exclude) for name in model.exp_names])


def exp_l1_weights(model: MorphableModel, settings: "CoarseSettings") -> torch.Tensor:
    """(n_exp,) the expressions' L1 prior per blendshape: ``settings.lambda_exp_l1``, 0 for those named by
    ``settings.exp_l1_exclude`` (name prefixes)."""
    keep = [not name.startswith(tuple(settings.exp_l1_exclude)) for name in model.exp_names]
    return settings.lambda_exp_l1 * torch.tensor(keep, dtype=torch.float32)


def _normaliser(uv: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) factor turning pixels into normalised pixels (landmark spread -> NORMALISED_SIZE)."""
    w = (weights > 0).to(uv)
    c = (uv * w[..., None]).sum(1, keepdim=True) / w.sum(1, keepdim=True)[..., None].clamp_min(1)
    spread = (((uv - c) ** 2).sum(-1) * w).sum(1) / w.sum(1).clamp_min(1)
    return NORMALISED_SIZE / (2.0 * spread.sqrt().clamp_min(1e-3))


def affine_pose(points: torch.Tensor, uv: torch.Tensor, weights: torch.Tensor,
                intrinsics: torch.Tensor):
    """Rigid pose from a weak-perspective (scaled orthographic) linear solve.

    ``points`` (B, K, 3) model frame, ``uv`` (B, K, 2) pixels, ``weights`` (B, K).
    Returns ``R`` (B, 3, 3) and ``t`` (B, 3) such that the face sits at the
    depth where its projected size matches.
    """
    # Normalised image coordinates (x, y) = pixel_to_camera(uv, depth 1) with the camera's y up.
    xy = pixel_to_camera(uv, torch.ones_like(uv[..., 0]), intrinsics)[..., :2]
    ones = torch.ones_like(points[..., :1])
    sw = weights[..., None].sqrt()
    # driver "gels" (QR; the columns x, y, z, 1 of a face's points are independent), not the CPU
    # default "gelsy", whose result depended by a few ulp on what freed memory held before the call
    # (4 distinct answers for one system after 33 different leftovers; as if its column-pivot
    # array, an input to gelsy, were not filled in). The alternation and the photometric polish
    # after it amplified that to 0.18 mm between two fits of one photo (astronaut, one thread).
    sol = torch.linalg.lstsq(torch.cat([points, ones], -1) * sw, xy * sw, driver="gels").solution  # (B, 4, 2)
    m = sol[:, :3].transpose(1, 2)  # (B, 2, 3): scaled first two rows of R
    shift = sol[:, 3]  # (B, 2)
    scale = 0.5 * (m[:, 0].norm(dim=-1) + m[:, 1].norm(dim=-1))
    # Nearest rotation to the affine rows (SVD), proper (det +1).
    r3 = torch.linalg.cross(m[:, 0], m[:, 1], dim=-1) / scale[:, None]
    u, _, vh = torch.linalg.svd(torch.stack([m[:, 0], m[:, 1], r3], 1))
    d = torch.det(u @ vh)
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], -1)
    rot = u @ vh
    # Weak perspective: x = (R X + t)_x / D with D the centroid's depth, so
    # scale = 1 / D, shift = t_xy / D and D = -(R c + t)_z.
    depth = 1.0 / scale.clamp_min(1e-9)
    centroid = (points * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-9)
    rc = torch.einsum("bij,bj->bi", rot, centroid)
    t = torch.stack([shift[:, 0] * depth, shift[:, 1] * depth, -depth - rc[:, 2]], -1)
    return rot, t


def reprojection_residual(points: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, uv: torch.Tensor,
                          intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) projected minus detected, pixels."""
    cam = torch.einsum("bij,bkj->bki", rot, points) + t[:, None]
    return camera_to_pixel(cam, intrinsics)[..., :2] - uv


def refine_pose(points: torch.Tensor, uv: torch.Tensor, weights: torch.Tensor, intrinsics: torch.Tensor,
                rot: torch.Tensor, t: torch.Tensor, iterations: int = 10, damping: float = 1e-3):
    """Perspective refinement of (R, t) by batched Levenberg-Marquardt on the reprojection error.

    The update is a small rotation vector w composed on the left of R
    (R <- exp(w) R) plus a translation step; the Jacobian is analytic:
    dP/dw = -[R X]_x, dP/dt = I. A step is kept per image only when it
    lowers that image's cost; otherwise its damping grows tenfold.
    """
    b = points.shape[0]
    sw = (weights.sqrt() * _normaliser(uv, weights)[:, None])[..., None]  # (B, K, 1)
    eye6 = torch.eye(6, dtype=points.dtype, device=points.device)
    lam = torch.full((b, 1, 1), damping, dtype=points.dtype, device=points.device)

    def cost_and_terms(rot, t):
        rx = torch.einsum("bij,bkj->bki", rot, points)
        cam = rx + t[:, None]
        r = (camera_to_pixel(cam, intrinsics)[..., :2] - uv) * sw  # (B, K, 2)
        return (r ** 2).sum((1, 2)), rx, cam, r

    cost, rx, cam, r = cost_and_terms(rot, t)
    for _ in range(iterations):
        jp = camera_to_pixel_jacobian(cam, intrinsics) * sw[..., None]  # (B, K, 2, 3)
        x, y, z = rx.unbind(-1)
        zero = torch.zeros_like(x)
        neg_skew = torch.stack([zero, z, -y, -z, zero, x, y, -x, zero], -1).reshape(*x.shape, 3, 3)
        j = torch.cat([jp @ neg_skew, jp], -1).reshape(b, -1, 6)  # (B, 2K, 6)
        jtj = j.transpose(1, 2) @ j
        jtr = j.transpose(1, 2) @ r.reshape(b, -1, 1)
        diag = torch.diag_embed(torch.diagonal(jtj, dim1=1, dim2=2)) + 1e-9 * eye6
        step = -torch.linalg.solve(jtj + lam * diag, jtr)[..., 0]
        new_rot = axis_angle_to_matrix(step[:, :3]) @ rot
        new_t = t + step[:, 3:]
        new_cost, new_rx, new_cam, new_r = cost_and_terms(new_rot, new_t)
        ok = (new_cost < cost) & torch.isfinite(new_cost) & (new_cam[..., 2] < 0).all(1)
        okv = ok[:, None]
        rot = torch.where(okv[..., None], new_rot, rot)
        t = torch.where(okv, new_t, t)
        cost = torch.where(ok, new_cost, cost)
        rx = torch.where(okv[..., None], new_rx, rx)
        cam = torch.where(okv[..., None], new_cam, cam)
        r = torch.where(okv[..., None], new_r, r)
        lam = torch.where(ok[:, None, None], lam * 0.3, lam * 10.0).clamp(1e-7, 1e7)
    return rot, t


def solve_spd(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve (B, n, n) symmetric positive definite systems for (B, n) right-hand sides, by Cholesky.

    Not ``torch.linalg.solve``: its batched LU on the CPU runs MKL from several threads at once for
    n > ~14 and, once ``torch.set_num_threads`` has been called, returns wrong numbers or fails
    ("Parameter 6 was incorrect on entry to DLASWP"; pytorch/pytorch#142815, torch 2.13 too).
    Batched Cholesky is not affected. A system that is not numerically positive definite (a
    regulariser set to 0) falls back to one unbatched LU solve per face, which is also safe.
    """
    chol, info = torch.linalg.cholesky_ex(a)
    sol = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
    bad = torch.nonzero(info).flatten().tolist()
    for i in bad:
        sol[i] = torch.linalg.solve(a[i], rhs[i])
    return sol


def shape_rows(lb: LandmarkBasis, uv: torch.Tensor, weights: torch.Tensor, intrinsics: torch.Tensor,
               rot: torch.Tensor, t: torch.Tensor, coeffs: torch.Tensor, rel_depth: Optional[torch.Tensor] = None,
               lambda_depth: float = 0.0):
    """The linearised landmark equations of :func:`solve_shape`, unregularised: ``(a, rhs)``.

    ``a`` (B, R, n) and ``rhs`` (B, R) with R = 2K (+ K with the depth term): the rows, in weighted
    normalised pixels, whose least-squares solution ``a @ x ~ rhs`` are the coefficients (identity
    modes first, then expressions, as in ``lb``) at the pose ``rot`` (B, 3, 3), ``t`` (B, 3). Each
    point's depth is taken at ``coeffs`` (B, n) (the perspective linearisation, exact at convergence).
    """
    b = uv.shape[0]
    dtype = uv.dtype
    fx, fy, cx, cy = (x[:, None] for x in intrinsics.unbind(-1))
    cam = torch.einsum("bij,bkj->bki", rot, lb.points(coeffs)) + t[:, None]
    depth = (-cam[..., 2]).clamp_min(1.0)
    norm = _normaliser(uv, weights)[:, None]
    scale = weights.sqrt() * norm / depth  # (B, K): to weighted normalised pixels

    ru = fx[..., None] * rot[:, None, 0] + (uv[..., 0] - cx)[..., None] * rot[:, None, 2]  # (B, K, 3)
    rv = fy[..., None] * rot[:, None, 1] - (uv[..., 1] - cy)[..., None] * rot[:, None, 2]
    cu = fx * t[:, 0:1] + (uv[..., 0] - cx) * t[:, 2:3]
    cv = fy * t[:, 1:2] - (uv[..., 1] - cy) * t[:, 2:3]
    au = torch.einsum("bkc,kcn->bkn", ru, lb.basis) * scale[..., None]
    av = torch.einsum("bkc,kcn->bkn", rv, lb.basis) * scale[..., None]
    mean = lb.mean.expand(b, -1, -1)
    bu = -(torch.einsum("bkc,bkc->bk", ru, mean) + cu) * scale
    bv = -(torch.einsum("bkc,bkc->bk", rv, mean) + cv) * scale
    a = torch.cat([au, av], 1)
    rhs = torch.cat([bu, bv], 1)
    if rel_depth is not None and lambda_depth > 0:
        w = (weights > 0).to(dtype)
        mean_w = w / w.sum(1, keepdim=True).clamp_min(1)
        zc = rel_depth - (rel_depth * mean_w).sum(1, keepdim=True)
        rz = rot[:, None, 2].expand(-1, lb.basis.shape[0], -1)
        dz = torch.einsum("bkc,kcn->bkn", rz, lb.basis)
        dz = dz - (dz * mean_w[..., None]).sum(1, keepdim=True)
        mz = torch.einsum("bkc,bkc->bk", rz, mean)
        mz = mz - (mz * mean_w).sum(1, keepdim=True)
        f_over_d = (fx / depth.mean(1, keepdim=True))
        s = (lambda_depth ** 0.5) * w * norm * f_over_d
        a = torch.cat([a, dz * s[..., None]], 1)
        # P_z rises toward the camera while MediaPipe's z falls: target -z.
        rhs = torch.cat([rhs, (-zc / f_over_d - mz) * s], 1)

    return a, rhs


def solve_shape(lb: LandmarkBasis, uv: torch.Tensor, weights: torch.Tensor, intrinsics: torch.Tensor,
                rot: torch.Tensor, t: torch.Tensor, lambda_id: float, lambda_exp: float,
                prev_coeffs: Optional[torch.Tensor] = None, exp_bounds=(0.0, 1.0),
                rel_depth: Optional[torch.Tensor] = None, lambda_depth: float = 0.0,
                active_set_rounds: int = 10, frozen: Optional[torch.Tensor] = None,
                prior_mean: Optional[torch.Tensor] = None, lambda_exp_l1=0.0) -> torch.Tensor:
    """Regularised linear least squares for (a_id, a_exp) with the pose fixed.

    For a camera-space point P = R X(a) + t the projection equations
    ``fx Px + (u - cx) Pz = 0`` and ``fy Py - (v - cy) Pz = 0`` are linear in
    a; dividing by the current depth of each point turns them into pixel
    residuals (the usual perspective linearisation, exact at convergence).
    ``rel_depth`` (B, K): MediaPipe's relative depth in pixels (smaller =
    closer), used as a weak extra constraint with weight ``lambda_depth``.
    Expression activations are kept in ``exp_bounds`` by clamping and
    re-solving with the clamped ones pinned, and freeing a pinned one whose gradient points back
    into the bounds (a batched active set, ``active_set_rounds`` re-solves at most: with the L1 prior
    the faces of `bench expressions` needed 6-8; at 4 none had converged, the clamped answer 3.219
    against 3.213 mm from the truth).
    ``frozen`` (n,) bool: coefficients held at zero (a strong penalty).
    ``prior_mean`` (B, n): centre of the Tikhonov prior (an initialiser's
    estimate); zeros (the model mean) when None.
    ``lambda_exp_l1``: a sparse (L1) prior on the expressions, ``+ sum_j l_j |a_exp_j|``, a float or
    (n_exp,) per blendshape, same units as ``lambda_exp``. With the activations kept >= 0 it is the
    linear term ``l_j a_exp_j``: it moves the right-hand side by ``-l_j / 2`` (the objective's factor
    of 2 on the squares) and keeps the problem a bounded QP, solved by the same active set.
    Returns (B, n) coefficients.
    """
    b = uv.shape[0]
    n = lb.basis.shape[-1]
    dtype, dev = uv.dtype, uv.device
    coeffs = prev_coeffs if prev_coeffs is not None else torch.zeros(b, n, dtype=dtype, device=dev)
    a, rhs = shape_rows(lb, uv, weights, intrinsics, rot, t, coeffs, rel_depth, lambda_depth)

    # float64: the pinning penalty makes the system stiff.
    a64, rhs64 = a.double(), rhs.double()
    ata = a64.transpose(1, 2) @ a64
    atb = (a64.transpose(1, 2) @ rhs64[..., None])[..., 0]
    reg = torch.cat([torch.full((lb.n_id,), float(lambda_id)), torch.full((n - lb.n_id,), float(lambda_exp))])
    reg = reg.to(ata)
    if frozen is not None:
        reg = reg + 1e3 * torch.diagonal(ata, dim1=1, dim2=2).mean(-1, keepdim=True) * frozen.to(ata)
    lo, hi = exp_bounds
    pinned = torch.zeros(b, n, dtype=torch.bool, device=dev)
    pin_value = torch.zeros(b, n, dtype=ata.dtype, device=dev)
    big = 1e4 * torch.diagonal(ata, dim1=1, dim2=2).mean(-1, keepdim=True).clamp_min(1.0)
    centre = torch.zeros(b, n, dtype=ata.dtype, device=dev) if prior_mean is None else prior_mean.to(ata)
    if frozen is not None:
        centre = torch.where(frozen.to(dev), torch.zeros_like(centre), centre)
    linear = torch.zeros(n, dtype=ata.dtype, device=dev)
    linear[lb.n_id:] = 0.5 * torch.as_tensor(lambda_exp_l1, dtype=ata.dtype, device=dev)
    if frozen is not None:
        linear = torch.where(frozen.to(dev), torch.zeros_like(linear), linear)
    sol = None
    for _ in range(active_set_rounds + 1):
        diag = reg.expand(b, n) + big * pinned
        rhs_total = atb + reg * centre - linear + big * pinned * pin_value
        sol = solve_spd(ata + torch.diag_embed(diag), rhs_total)
        e = sol[:, lb.n_id:]
        out = ((e < lo) | (e > hi)) & ~pinned[:, lb.n_id:]
        # A pinned activation whose gradient points into the box (its multiplier has the wrong sign) is
        # set free again: without that, one pinned early stayed at its bound, and with the L1 term
        # (which pins many at 0 in the first round) others were pushed to 1 to make up for them.
        grad = ((ata @ sol[..., None])[..., 0] + reg * sol - (atb + reg * centre - linear))[:, lb.n_id:]
        at_lo, at_hi = pin_value[:, lb.n_id:] <= lo, pin_value[:, lb.n_id:] >= hi
        release = pinned[:, lb.n_id:] & ((at_lo & (grad < 0)) | (at_hi & (grad > 0)))
        if not bool(out.any()) and not bool(release.any()):
            break
        pin_value[:, lb.n_id:] = torch.where(out, e.clamp(lo, hi), pin_value[:, lb.n_id:])
        pinned[:, lb.n_id:] = (pinned[:, lb.n_id:] | out) & ~release
    sol = sol.to(dtype)
    sol[:, lb.n_id:] = sol[:, lb.n_id:].clamp(lo, hi)
    return sol
