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
from typing import Optional, Tuple, Union

import numpy as np

import torch

from sfs.projection import camera_to_pixel, pixel_to_camera

from .rotation import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle, matrix_to_euler  # noqa: F401

#: Default field of view (degrees) on the longer image side. Portrait photos
#: are mostly taken with a normal-to-short telephoto lens (35 mm equivalent
#: focal length of 50-85 mm, i.e. 40-25 degrees); 30 degrees sits in between.
DEFAULT_FOV = 30.0


# --------------------------------------------------------------------------- camera

def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view (degrees) across ``size`` pixels."""
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


def photo_intrinsics(height: int, width: int, fov_deg: float = DEFAULT_FOV) -> np.ndarray:
    """(4,) fx, fy, cx, cy in pixels for a photo: square pixels, ``fov_deg`` across the longer
    side, principal point at the centre."""
    f = focal_from_fov(fov_deg, max(height, width))
    return np.array([f, f, width / 2.0, height / 2.0], np.float64)


Array = Union[np.ndarray, torch.Tensor]


def crop_intrinsics(intrinsics: Array, box: Array) -> Array:
    """Intrinsics (..., 4) of the crop ``box`` (..., 3) = ``x0, y0, scale`` of an image whose
    intrinsics are ``intrinsics``: crop pixel ``u_crop = (u - x0) * scale`` (same for v).

    The crop is a camera operation: the pose does not change, the focal lengths scale and the
    principal point shifts. Works on numpy arrays and torch tensors alike.
    """
    x0, y0, scale = box[..., 0], box[..., 1], box[..., 2]
    fx, fy, cx, cy = intrinsics[..., 0], intrinsics[..., 1], intrinsics[..., 2], intrinsics[..., 3]
    stack = torch.stack if isinstance(intrinsics, torch.Tensor) else np.stack
    return stack([fx * scale, fy * scale, (cx - x0) * scale, (cy - y0) * scale], -1)


@dataclass(frozen=True)
class Camera:
    """A batch of B pinhole cameras sharing one image size.

    - ``intrinsics``: (B, 4) ``fx, fy, cx, cy`` in pixels;
    - ``rotation``: (B, 3, 3) and ``translation``: (B, 3) mm, model -> camera
      (``X_cam = R X + t``);
    - ``height``, ``width``: image size in pixels.

    The stages share one camera per batch: the working crop's (:meth:`crop`
    makes it from the photo's, :meth:`uncrop` gives the photo's back).
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

    def __getitem__(self, index) -> "Camera":
        """The cameras ``index`` (an int keeps a batch of one, a slice or index tensor selects)."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return replace(self, intrinsics=self.intrinsics[index], rotation=self.rotation[index],
                       translation=self.translation[index])

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

    def with_pose(self, rotation: torch.Tensor, translation: torch.Tensor) -> "Camera":
        """The same lenses at another pose: ``rotation`` (B, 3, 3), ``translation`` (B, 3) mm."""
        return replace(self, rotation=rotation, translation=translation)

    def crop(self, box: torch.Tensor, size: int) -> "Camera":
        """The cameras of square crops of side ``size``: ``box`` (B, 3) ``x0, y0, scale`` maps image
        pixels to crop pixels as ``(u - x0) * scale``; the pose is unchanged."""
        return replace(self, intrinsics=crop_intrinsics(self.intrinsics, box.to(self.intrinsics)),
                       height=size, width=size)

    def uncrop(self, box: torch.Tensor, height: int, width: int) -> "Camera":
        """Inverse of :meth:`crop`: the cameras of the ``height`` x ``width`` images the crops came from."""
        box = box.to(self.intrinsics)
        x0, y0, scale = box.unbind(-1)
        fx, fy, cx, cy = self.intrinsics.unbind(-1)
        k = torch.stack([fx / scale, fy / scale, cx / scale + x0, cy / scale + y0], -1)
        return replace(self, intrinsics=k, height=height, width=width)

    def euler_degrees(self) -> torch.Tensor:
        """(B, 3) yaw, pitch, roll of the rotation (conventions above)."""
        return torch.stack(matrix_to_euler(self.rotation), -1)

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
