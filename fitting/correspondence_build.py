"""Builds the MediaPipe -> ICT landmark table (see :mod:`fitting.correspondence` for the method)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from tqdm.auto import tqdm

from landmarks import FaceMeshDetector, NoFaceError
from landmarks.indices import GROUP_NAMES, point_groups
from morphable import load_ict

from .renderer import Renderer
from .synthetic import FaceGenerator

FACE_VERTICES = 9409  # ICT face area: vertices 0..9408, first in every region that keeps it
MIN_HITS = 3
CONTOUR_MAX_YAW = 12.0  # deg: contour points are read only from near-frontal renders


def _closest_surface_points(verts: np.ndarray, tris: np.ndarray, points: np.ndarray):
    """Nearest points on a mesh: (K,) triangle ids and (K, 3) barycentrics."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(tris.astype(np.uint32)))
    ans = scene.compute_closest_points(o3d.core.Tensor(points.astype(np.float32)))
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    uv = ans["primitive_uvs"].numpy().astype(np.float64)
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
    return prim, bary


def build(model_dir, n: int, seed: int, out: Path) -> Path:
    model = load_ict(model_dir, region="face_closed")
    renderer = Renderer("cpu")
    gen = FaceGenerator(model, renderer, texture_size=512)
    groups = point_groups()
    contour = groups == GROUP_NAMES.index("contour")
    iris = groups == GROUP_NAMES.index("iris")
    k = len(groups)
    sums = np.zeros((k, 3))
    hits = np.zeros(k)
    rest = model.mean.numpy().astype(np.float64)
    tris_all = model.triangles.numpy()
    with FaceMeshDetector(max_faces=1) as det:
        for i in tqdm(range(n), desc="correspondence renders"):
            face = gen(seed * 1000 + i, size=512, yaw_range=25.0, noise=False)
            try:
                lm = det.detect_one(face.image)
            except NoFaceError:
                continue
            frags = renderer.rasterize(torch.from_numpy(face.verts_camera)[None], model.triangles,
                                       face.camera.intrinsics, 512, 512)
            tri_map, bary_map = frags.tri_id[0].numpy(), frags.bary[0].numpy()
            cols = np.clip(np.floor(lm.points[:, 0]).astype(int), 0, 511)
            rows = np.clip(np.floor(lm.points[:, 1]).astype(int), 0, 511)
            tri = tri_map[rows, cols]
            ok = tri >= 0
            tv = tris_all[np.where(ok, tri, 0)]
            ok &= (tv < FACE_VERTICES).all(1)
            if abs(face.params["pose_deg"]["yaw"]) > CONTOUR_MAX_YAW:
                ok &= ~contour
            p = (rest[tv] * bary_map[rows, cols][..., None]).sum(1)
            sums[ok] += p[ok]
            hits[ok] += 1
    valid = (hits >= MIN_HITS) & ~iris
    mean_pts = np.where(valid[:, None], sums / np.maximum(hits, 1)[:, None], rest[0])
    face_tris = tris_all[(tris_all < FACE_VERTICES).all(1)]
    prim, bary = _closest_surface_points(rest[:FACE_VERTICES], face_tris, mean_pts)
    vertex_ids = face_tris[prim]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, vertex_ids=vertex_ids.astype(np.int32), bary=bary.astype(np.float32), valid=valid,
                        hits=hits.astype(np.int32))
    print(f"wrote {out}: {int(valid.sum())} of {k} landmarks valid "
          f"(min hits {int(hits[~iris].min())}, renders {n})")
    return out
