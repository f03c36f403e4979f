"""Batched rotations: axis-angle (rotation vector, radians) and yaw/pitch/roll (degrees).

Model frame: +x the subject's left, +y up, +z out of the face. Positive yaw
turns the nose toward +x (image right for a camera in front), positive
pitch lifts the nose, positive roll turns the face counter-clockwise in the
image. ``euler_to_matrix`` composes ``R = Rz(roll) @ Rx(-pitch) @ Ry(yaw)``.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle (radians, direction = axis) -> (B, 3, 3) rotation (Rodrigues).

    Differentiable, including at zero angle (a Taylor expansion is used there).
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-12
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # sin(t)/t and (1 - cos t)/t^2, with their series near 0
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation -> (B, 3) axis-angle in radians (angle in [0, pi])."""
    r = rotation
    cos = ((r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2] - 1) / 2).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    w = torch.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], -1)
    sin = torch.sin(theta)
    out = w * (theta / (2 * sin.clamp_min(1e-8)))[:, None]
    near_pi = theta > math.pi - 1e-3
    if near_pi.any():
        # w vanishes at pi: take the axis from the symmetric part R + I = 2 a a^T
        s = (r[near_pi] + torch.eye(3, dtype=r.dtype, device=r.device)) / 2
        col = torch.argmax(torch.diagonal(s, dim1=1, dim2=2), dim=1)
        axis = torch.nn.functional.normalize(s[torch.arange(s.shape[0]), :, col], dim=-1)
        out[near_pi] = axis * theta[near_pi, None]
    return out


def _rot(axis: int, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        m = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        m = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        m = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(m, -1).reshape(*angle.shape, 3, 3)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles (B,) in degrees -> (B, 3, 3) ``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (axes: module doc)."""
    yaw, pitch, roll = (torch.deg2rad(torch.as_tensor(a, dtype=torch.float32)
                                      if not torch.is_tensor(a) else a) for a in (yaw, pitch, roll))
    # Rx(+a) sends +z toward -y; "positive pitch = nose up" is therefore Rx(-pitch).
    return _rot(2, roll) @ _rot(0, -pitch) @ _rot(1, yaw)


def matrix_to_euler(rotation: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, 3) -> (yaw, pitch, roll) each (B,) in degrees, inverse of :func:`euler_to_matrix`
    for |pitch| < 90."""
    r = rotation
    # R = Rz(r) Rx(-p) Ry(y): third row (-cos p sin y, -sin p, cos p cos y),
    # second column (-sin r cos p, cos r cos p, -sin p)
    pitch = -torch.asin((r[:, 2, 1]).clamp(-1, 1))
    yaw = torch.atan2(-r[:, 2, 0], r[:, 2, 2])
    roll = torch.atan2(-r[:, 0, 1], r[:, 1, 1])
    return torch.rad2deg(yaw), torch.rad2deg(pitch), torch.rad2deg(roll)




def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation -> (B, 4) unit quaternion ``(x, y, z, w)`` (glTF's order), ``w >= 0``.

    Each row is computed from the largest of ``|w|, |x|, |y|, |z|`` (Shepperd's method), which
    stays accurate near 180 degrees where ``w`` alone would not.
    """
    r = rotation
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    # 4 |w|^2, 4 |x|^2, 4 |y|^2, 4 |z|^2 from the diagonal
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    two_abs = sq.clamp_min(0).sqrt()                                       # (B, 4): 2|w|, 2|x|, 2|y|, 2|z|
    a21, a02, a10 = r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]  # 4 w x, 4 w y, 4 w z
    s10, s02, s21 = r[:, 1, 0] + r[:, 0, 1], r[:, 0, 2] + r[:, 2, 0], r[:, 2, 1] + r[:, 1, 2]  # 4 x y, 4 x z, 4 y z
    # row k: 4 q_k * (w, x, y, z); divided by 4 |q_k| it is the quaternion (up to sign)
    rows = torch.stack([
        torch.stack([sq[:, 0], a21, a02, a10], -1),
        torch.stack([a21, sq[:, 1], s10, s02], -1),
        torch.stack([a02, s10, sq[:, 2], s21], -1),
        torch.stack([a10, s02, s21, sq[:, 3]], -1)], 1)                     # (B, 4, 4)
    best = torch.argmax(two_abs, -1)
    idx = torch.arange(r.shape[0], device=r.device)
    wxyz = rows[idx, best] / (2 * two_abs[idx, best]).clamp_min(1e-12)[:, None]
    wxyz = torch.nn.functional.normalize(wxyz, dim=-1)
    wxyz = torch.where(wxyz[:, :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[:, 1:], wxyz[:, :1]], -1)
