"""Faces MediaPipe's mesh misses, read by the 3DDFA_V2 regressor alone (issue 17, item 3).

Why faces are missed (measured on `bench align --faces 8`, seed 0, yaw bin 60-90): all four missed faces
are at |yaw| 86-90 degrees; the short-range detector boxes every one of them (scores 0.60-0.80, threshold
0.5; the full-range detector two of them at its 0.6), but Face Mesh's face presence score on that region
is 0.001-0.045 against its threshold of 0.5, so the mesh is dropped. The face box is there; the mesh is
not. :meth:`landmarks.detector.FaceMeshDetector.boxes_without_mesh` hands those boxes on, and this module
reads each with the regressor (two passes: the box, then its own 68 points).

How such a face travels through the stages, which all take MediaPipe's 478 points
(:class:`fitting.detections.DetectionBatch`): its 478 points are *stand-ins*, the mean face's
correspondence points (:mod:`fitting.stages.correspondence`) projected at the pose the regressor's 68
points give (:func:`fitting.stages.initializers.pose_from_points68`), so the crop, the region labels
and the initialiser's box come out where the face is; and its ``FaceCrop.mediapipe`` is False, which
makes the batch's ``mediapipe_weight`` 0 for it: the coarse stage's fusion multiplies MediaPipe's trust
by it (the face is fitted from the regressor's 68 points alone) and the medium stage's targets follow
that trust (none). Without the regressor nothing here runs and such a face is not found, as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import numpy as np
import torch

from landmarks import FaceLandmarks

from .camera import DEFAULT_FOV, Camera, photo_intrinsics

if TYPE_CHECKING:
    from landmarks.regressor import FaceRegressor
    from morphable import MorphableModel

    from .stages.correspondence import Correspondence

# Regressor passes per box: the first crops around the detector's box (drawn for upstream's FaceBoxes,
# not BlazeFace), the second around the first pass's 68 points, which no longer depends on the box.
REGRESSOR_PASSES = 2


def regressor_face(image: np.ndarray, box, regressor: "FaceRegressor", model: "MorphableModel",
                   corr: "Correspondence", fov_deg: float = DEFAULT_FOV) -> Tuple[FaceLandmarks, np.ndarray]:
    """One face from a detector's box, read by the regressor alone.

    ``image`` (H, W, 3) float RGB in [0, 1] (the photo); ``box`` ``(u0, v0, u1, v1)`` photo pixels.
    Returns ``(landmarks, points68)``: stand-in MediaPipe points (478, 3) (module docstring; u, v photo
    pixels, z relative depth in pixels, smaller = closer, as MediaPipe's) as :class:`FaceLandmarks`
    (``refined=False``), and the regressor's 68 points (68, 3) photo pixels (u, v, depth larger =
    closer, as :class:`landmarks.regressor.RegressedFaces`).
    """
    from .stages.initializers import pose_from_points68

    h, w = image.shape[:2]
    found = regressor(np.asarray(image, np.float32), np.asarray(box, np.float64)[None], passes=REGRESSOR_PASSES)
    points68 = found.points[0]
    k = torch.as_tensor(photo_intrinsics(h, w, fov_deg))
    rot, t = pose_from_points68(model, torch.as_tensor(points68), k)
    dtype = rot.dtype
    mean = model.mean.detach().cpu().to(dtype)[None]
    surface = corr.points(mean)  # (1, 478, 3) mm
    cam = Camera(intrinsics=k[None].to(dtype), rotation=rot[None], translation=t[None], height=h, width=w)
    uvd = cam.project(surface)[0]  # (478, 3): pixels and depth in mm
    depth = uvd[:, 2]
    mid = depth.mean()
    # MediaPipe's z: pixels at the face's distance (fx / distance per mm), smaller = closer
    z = (depth - mid) * k[0].to(dtype) / mid
    pts = torch.cat([uvd[:, :2], z[:, None]], 1).float().numpy()
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    face = FaceLandmarks(np.ascontiguousarray(pts), (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                         (int(h), int(w)), refined=False)
    return face, points68
