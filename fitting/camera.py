"""A batched pinhole camera: intrinsics plus a rigid model -> camera transform.

Frames (see :mod:`sfs.projection`, the only place signs are flipped):

- model frame (mm): +x toward the subject's left, +y up, +z out of the face;
- camera frame (mm): +x right, +y up, the camera looks down -z, depth = -z;
- pixels: u right, v down, pixel centres at +0.5.

``X_cam = R X_model + t``. With ``R = I`` and ``t = (0, 0, -distance)`` a face
whose +z points out of it looks straight into the camera.

Rotations from angles (degrees), applied to the model before the translation:
``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``.

- yaw about +y: positive yaw turns the nose toward +x, i.e. toward image
  right (the subject turns to its own left);
- pitch about +x: positive pitch lifts the nose (toward +y, the subject
  looks up);
- roll about +z: positive roll turns the face counter-clockwise in the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch

from sfs.projection import camera_to_pixel, pixel_to_camera

#: Default field of view (degrees) on the longer image side. Portrait photos
#: are mostly taken with a normal-to-short telephoto lens (35 mm equivalent
#: focal length of 50-85 mm, i.e. 40-25 degrees); 30 degrees sits in between.
DEFAULT_FOV = 30.0


# --------------------------------------------------------------------------- rotations

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


# --------------------------------------------------------------------------- camera

def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view (degrees) across ``size`` pixels."""
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


@dataclass
class Camera:
    """A batch of B pinhole cameras sharing one image size.

    - ``intrinsics``: (B, 4) ``fx, fy, cx, cy`` in pixels;
    - ``rotation``: (B, 3, 3) and ``translation``: (B, 3) mm, model -> camera
      (``X_cam = R X + t``);
    - ``height``, ``width``: image size in pixels.
    """

    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    height: int
    width: int

    @classmethod
    def from_image_size(cls, height: int, width: int, fov_deg: float = DEFAULT_FOV, batch: int = 1,
                        distance: float = 600.0, rotation: Optional[torch.Tensor] = None,
                        dtype=torch.float32, device=None) -> "Camera":
        """Square pixels, ``fov_deg`` across the longer side, principal point at the centre.

        The default pose looks at the model origin from ``distance`` mm along
        the model's +z axis (R = I, t = (0, 0, -distance)).
        """
        f = focal_from_fov(fov_deg, max(height, width))
        k = torch.tensor([f, f, width / 2.0, height / 2.0], dtype=dtype, device=device)
        r = torch.eye(3, dtype=dtype, device=device) if rotation is None else rotation.to(dtype)
        r = r.expand(batch, 3, 3).clone()
        t = torch.tensor([0.0, 0.0, -distance], dtype=dtype, device=device)
        return cls(k.expand(batch, 4).clone(), r, t.expand(batch, 3).clone(), height, width)

    @property
    def batch_size(self) -> int:
        return int(self.intrinsics.shape[0])

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.height, self.width

    def to(self, device=None, dtype=None) -> "Camera":
        return replace(self, intrinsics=self.intrinsics.to(device=device, dtype=dtype),
                       rotation=self.rotation.to(device=device, dtype=dtype),
                       translation=self.translation.to(device=device, dtype=dtype))

    def to_camera(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model-frame mm -> (B, V, 3) camera-frame mm."""
        return verts @ self.rotation.transpose(1, 2).to(verts) + self.translation.to(verts)[:, None]

    def to_model(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) camera-frame mm -> (B, N, 3) model-frame mm (inverse of :meth:`to_camera`)."""
        return (points_cam - self.translation.to(points_cam)[:, None]) @ self.rotation.to(points_cam)

    def project(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model-frame mm -> (B, V, 3) ``(u, v, depth)``: pixels and mm."""
        return camera_to_pixel(self.to_camera(verts), self.intrinsics.to(verts))

    def backproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) pixels and (B, N) depth in mm -> (B, N, 3) model-frame mm."""
        return self.to_model(pixel_to_camera(uv, depth, self.intrinsics.to(uv)))

    def rotate_normals(self, normals: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model-frame directions -> camera-frame directions."""
        return normals @ self.rotation.transpose(1, 2).to(normals)

    def look_at_face(self, verts: torch.Tensor, fill: float = 0.6, iterations: int = 3) -> "Camera":
        """A copy whose translation frames ``verts`` (B, V, 3, model frame, mm; the
        rotation is kept) so that their projected bounding box spans ``fill`` of the
        shorter image side and is centred in the image.

        The distance comes from the pinhole relation (size_px = f * size_mm / depth)
        and is refined a few times on the actual projection, which accounts for
        the face's own depth (nearer parts look larger).
        """
        with torch.no_grad():
            rv = verts.detach() @ self.rotation.transpose(1, 2).to(verts)
            lo, hi = rv.amin(1), rv.amax(1)
            centre = (lo + hi) / 2
            ext = hi - lo
            k = self.intrinsics.to(verts)
            fx, fy, cx, cy = k.unbind(-1)
            target = fill * min(self.height, self.width)
            dist = torch.maximum(fx * ext[:, 0], fy * ext[:, 1]) / target + ext[:, 2] / 2
            t = torch.stack([-centre[:, 0], -centre[:, 1], -centre[:, 2] - dist], -1)
            for _ in range(iterations):
                cam = replace(self, translation=t)
                uvd = cam.project(verts.detach())
                plo, phi = uvd[..., :2].amin(1), uvd[..., :2].amax(1)
                size = torch.maximum(phi[:, 0] - plo[:, 0], phi[:, 1] - plo[:, 1]) \
                    if self.height == self.width else torch.maximum(
                        (phi[:, 0] - plo[:, 0]) * min(self.height, self.width) / self.width,
                        (phi[:, 1] - plo[:, 1]) * min(self.height, self.width) / self.height)
                d_mid = uvd[..., 2].mean(1)
                # scale the distance of the face centre, then re-centre the box
                new_d = d_mid * size / target
                t = t.clone()
                t[:, 2] = t[:, 2] - (new_d - d_mid)
                # move the box centre onto the principal point at the new depth
                box_c = torch.stack([(plo + phi) / 2, torch.stack([cx, cy], -1)], 1)  # (B, 2, 2)
                pts = pixel_to_camera(box_c, new_d[:, None].expand(-1, 2), k)
                t[:, :2] = t[:, :2] - (pts[:, 0, :2] - pts[:, 1, :2])
            return replace(self, translation=t)
