"""Batched rotations: axis-angle (rotation vector, radians) and yaw/pitch/roll (degrees).

Yaw turns about +y (positive yaw turns the nose toward +x, the subject's
left), pitch about +x (positive: nose down), roll about +z.
``euler_to_matrix`` composes R = R_z(roll) @ R_x(pitch) @ R_y(yaw).
"""
from __future__ import annotations

import math

import torch


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) matrices (Rodrigues; smooth at zero)."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)
    theta = theta2.clamp_min(1e-24).sqrt()
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with their Taylor series near zero, for exact gradients there.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) rotation vectors (angle in [0, pi])."""
    cos = ((torch.diagonal(rot, dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    axis = torch.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                        rot[..., 1, 0] - rot[..., 0, 1]], -1)
    sin = torch.sin(angle)
    near_pi = angle > math.pi - 1e-3
    axis_pi = torch.sqrt(((torch.diagonal(rot, dim1=-2, dim2=-1) + 1.0) / 2.0).clamp_min(0.0))
    # Fix signs for angle ~ pi from the off-diagonal terms.
    sx = torch.sign(rot[..., 0, 1] + rot[..., 1, 0]).where(axis_pi[..., 0] < axis_pi[..., 1], torch.ones_like(cos))
    axis_pi = axis_pi * torch.stack([torch.ones_like(cos), sx, torch.sign(rot[..., 0, 2] + rot[..., 2, 0] + 1e-12)], -1)
    scale = torch.where(sin.abs() < 1e-6, 0.5 * torch.ones_like(sin), angle / (2.0 * sin))
    out = axis * scale[..., None]
    return torch.where(near_pi[..., None], axis_pi * angle[..., None], out)


def euler_to_matrix(yaw_deg, pitch_deg, roll_deg) -> torch.Tensor:
    """Yaw/pitch/roll in degrees (tensors of shape (B,) or floats) -> (B, 3, 3)."""
    yaw, pitch, roll = (torch.as_tensor(a, dtype=torch.float32) * (math.pi / 180.0) for a in
                        (yaw_deg, pitch_deg, roll_deg))
    yaw, pitch, roll = torch.broadcast_tensors(yaw.reshape(-1), pitch.reshape(-1), roll.reshape(-1))
    z = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack([z, yaw, z], -1))
    rx = axis_angle_to_matrix(torch.stack([pitch, z, z], -1))
    rz = axis_angle_to_matrix(torch.stack([z, z, roll], -1))
    return rz @ rx @ ry


def matrix_to_euler(rot: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) -> (B, 3) yaw, pitch, roll in degrees (inverse of :func:`euler_to_matrix`)."""
    # R = Rz Rx Ry: R[2,1] = sin(pitch); R[2,0] = -cos(pitch) sin(yaw); R[0,1] = -sin(roll) cos(pitch)
    pitch = torch.asin(rot[..., 2, 1].clamp(-1, 1))
    yaw = torch.atan2(-rot[..., 2, 0], rot[..., 2, 2])
    roll = torch.atan2(-rot[..., 0, 1], rot[..., 1, 1])
    return torch.stack([yaw, pitch, roll], -1) * (180.0 / math.pi)
