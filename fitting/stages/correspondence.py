"""Where the 478 MediaPipe landmarks sit on the ICT surface: a fixed table, and the script that makes it.

The table (``fitting/data/mediapipe_ict.npz``) gives, per MediaPipe point k,
three ICT vertex indices and barycentric weights: the surface point
``sum_j bary[k, j] * V[vertex_ids[k, j]]``. Vertex indices of the face area
(0..9408) are the same for every region that contains it, so the table holds
for any region that keeps the face.

How it is made (``python -m fitting.stages.correspondence_build``): synthetic faces of
the model (random identity, expression and mild pose, procedural albedo) are
rendered with the toolkit's own renderer; MediaPipe runs on each render; the
surface point under each detected landmark is read back from the rendered
triangle id and barycentrics, mapped to the model's *rest* shape, and
averaged in 3D over the renders where it landed on the face area. The
average is snapped back to the nearest surface point. Contour points come
from near-frontal renders only (their surface point moves with yaw), and
iris points, which sit on the eyeball (not in the face area), are marked
invalid and get zero weight, as are points that too few renders placed
(385 and 386 on the left upper lid). Invalid rows still hold a real surface
point for callers of ``points``: the mirror image (x -> -x) of the other
eye's twin point (158, 159), or for the iris the lid point nearest its eye's
centre (:func:`fitting.correspondence_build.stand_in_points`;
``--fill-invalid`` redoes only that in a table). They had vertex 0 before;
with zero weight they never entered a fit, so fits are unchanged. The
lower half of the inner-lip outline (95 ... 14 ... 324) is the exception to
the average: on a closed mouth it meets the upper half, and the average had
put it on the upper lip, where an opening mouth could not move it; those
points sit on the lower lip's top edge instead
(:func:`fitting.stages.correspondence_build.lower_lip_rows`).

Pose-dependent offsets. MediaPipe's points are the projections of its own
3D face mesh, not of the photographed surface, so a fixed surface point
explains them well only near the pose it was read at: on synthetic renders
the distance between a MediaPipe point and its table point's true
projection grows from 4.3 crop px (|yaw| < 20 deg) to 6.9 px (|yaw| >
20 deg), and most of that is a smooth, repeatable function of yaw. The file
therefore also holds, per yaw bin and landmark, a 3D offset (model frame,
mm) from the surface point to where MediaPipe's point behaves as if it sat:
the least-squares offset that best explains MediaPipe's points on renders
of known shape and pose (``offsets`` (Y, K, 3) at ``offset_yaws`` (Y,)
degrees, every 15 deg over +/-45 deg; a face's offsets interpolate
linearly in its yaw and stay at the end bins beyond them). On its 300
renders the mean distance falls from 3.45 to 2.48 px; on held-out faces at
20-40 deg yaw from 3.3 to 2.2 px (tests/fitting/test_correspondence.py).
The coarse stage reads ``offsets_at(yaw)`` once per face and keeps them in
its result (``CoarseResult.landmark_offsets``) for the later stages;
``points(vertices, yaw)`` adds them to the surface points in one call.
Without offsets in the file both give zero offsets / the plain points.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

DATA_PATH = Path(__file__).parents[1] / "data" / "mediapipe_ict.npz"


@dataclass
class Correspondence:
    """``vertex_ids`` (K, 3) int64, ``bary`` (K, 3) float32, ``valid`` (K,) bool; optional pose-dependent
    ``offsets`` (Y, K, 3) mm (model frame) at ``offset_yaws`` (Y,) degrees, increasing."""

    vertex_ids: torch.Tensor
    bary: torch.Tensor
    valid: torch.Tensor
    offset_yaws: Optional[torch.Tensor] = None
    offsets: Optional[torch.Tensor] = None

    @property
    def has_offsets(self) -> bool:
        return self.offsets is not None and self.offset_yaws is not None

    def offsets_at(self, yaw_deg: torch.Tensor) -> torch.Tensor:
        """(B,) yaw in degrees -> (B, K, 3) model-frame offsets (mm), linear in yaw between bins,
        constant beyond the end bins; zeros when the table has none."""
        yaw = torch.as_tensor(yaw_deg).reshape(-1)
        k = self.vertex_ids.shape[0]
        if not self.has_offsets:
            return torch.zeros(yaw.shape[0], k, 3, dtype=torch.float32, device=yaw.device)
        w = yaw_bin_weights(yaw, self.offset_yaws.to(yaw.device))
        return torch.einsum("by,ykc->bkc", w, self.offsets.to(yaw.device, torch.float32))

    def points(self, vertices: torch.Tensor, yaw_deg: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, V, 3) -> (B, K, 3) the landmark surface points; with ``yaw_deg`` (B,) the points MediaPipe
        sees at that yaw (surface point + :meth:`offsets_at`)."""
        # index_select: its backward is repeatable with several threads (see morphable.geometry.face_normals)
        corners = vertices.index_select(1, self.vertex_ids.reshape(-1).to(vertices.device))
        pts = (corners.reshape(vertices.shape[0], *self.vertex_ids.shape, 3)
               * self.bary.to(vertices)[None, ..., None]).sum(2)
        if yaw_deg is None or not self.has_offsets:
            return pts
        return pts + self.offsets_at(yaw_deg).to(pts)


def yaw_bin_weights(yaw_deg: torch.Tensor, bin_yaws: torch.Tensor) -> torch.Tensor:
    """(B,) yaw and (Y,) increasing bin centres, degrees -> (B, Y) weights, each row summing to 1:
    linear interpolation between the two bins around the yaw, all weight on the end bin beyond them.
    The one rule by which offsets are both fitted (:mod:`fitting.correspondence_build`) and read."""
    yaws = bin_yaws.to(torch.float32)
    y = torch.as_tensor(yaw_deg).reshape(-1).to(yaws.device, torch.float32).clamp(float(yaws[0]), float(yaws[-1]))
    if yaws.numel() == 1:
        return torch.ones(y.shape[0], 1, device=yaws.device)
    hi = torch.searchsorted(yaws, y.contiguous()).clamp(1, len(yaws) - 1)
    lo = hi - 1
    s = ((y - yaws[lo]) / (yaws[hi] - yaws[lo])).clamp(0, 1)
    w = torch.zeros(y.shape[0], yaws.shape[0], device=yaws.device)
    rows = torch.arange(y.shape[0], device=yaws.device)
    w[rows, lo] += 1 - s
    w[rows, hi] += s
    return w


@functools.lru_cache(maxsize=4)
def load_correspondence(path: Path = DATA_PATH) -> Correspondence:
    """The table at ``path`` (read once per process; callers must not modify its tensors)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"landmark correspondence table {path} is missing; "
                                "make it with `python -m fitting.stages.correspondence_build`")
    with np.load(path) as z:
        offsets = ("offset_yaws" in z.files and "offsets" in z.files)
        return Correspondence(torch.from_numpy(z["vertex_ids"].astype(np.int64)),
                              torch.from_numpy(z["bary"].astype(np.float32)),
                              torch.from_numpy(z["valid"].astype(bool)),
                              torch.from_numpy(z["offset_yaws"].astype(np.float32)) if offsets else None,
                              torch.from_numpy(z["offsets"].astype(np.float32)) if offsets else None)




def triangle_ids(corr: Correspondence, triangles: torch.Tensor) -> torch.Tensor:
    """(K,) index into ``triangles`` (F, 3) of the triangle holding each landmark's three vertices.

    The barycentrics are reordered to the triangle's corner order (see
    :func:`triangle_barycentrics`); a landmark whose triangle is missing gets -1.
    """
    tri = triangles.detach().cpu().numpy().astype(np.int64)
    n = int(max(tri.max(), int(corr.vertex_ids.max()))) + 1
    key = lambda t: ((np.sort(t, 1) * np.array([n * n, n, 1])).sum(1))  # noqa: E731
    tkeys = key(tri)
    order = np.argsort(tkeys)
    q = key(corr.vertex_ids.numpy())
    pos = np.clip(np.searchsorted(tkeys[order], q), 0, len(order) - 1)
    found = tkeys[order][pos] == q
    return torch.from_numpy(np.where(found, order[pos], -1))


def triangle_barycentrics(corr: Correspondence, triangles: torch.Tensor, tri_ids: torch.Tensor) -> torch.Tensor:
    """(K, 3) barycentrics of each landmark in the corner order of ``triangles[tri_ids]``."""
    t = triangles[tri_ids.clamp_min(0)]  # (K, 3)
    match = t[:, :, None] == corr.vertex_ids[:, None, :].to(t)  # (K, 3 corners, 3 table entries)
    return (match.to(corr.bary) * corr.bary[:, None, :]).sum(-1)
