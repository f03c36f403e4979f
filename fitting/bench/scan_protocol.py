"""The head scan as ground truth for shape, and the MICC-style comparison of a mesh with it.

The scan (``../shared/scan/LeePerrySmith.glb``): "Infinite, 3D Head Scan" by
Lee Perry-Smith (Infinite-Realities), CC BY 3.0, as distributed with the
three.js examples; one mesh of 9,279 vertices (head and shoulders, neutral,
eyes closed), in the file's own units. Its axes are the model frame's: +x the
subject's left, +y up, +z out of the face. The file splits vertices along its
texture seams; :func:`load_scan` welds them (8,844 vertices), which leaves one
closed surface: the mouth's and nostrils' insides and the pockets behind the
closed eyelids are part of it.

Scale (:func:`scale_from_landmarks`): the file's units are set to millimetres
by the subject's intercanthal width (between the inner eye corners, MediaPipe
points 133 and 362 read off a frontal render of the scan): :data:`INTERCANTHAL_MM`.

:class:`ScanReference`: the scan in mm with its origin at the nose tip
(pronasale: the most forward vertex near MediaPipe's nose tip), the crop the
protocol scores, and the scan's landmarks.

The protocol (:func:`compare_with_scan`), after the MICC benchmark's (crop 95
mm around the nose tip, align, scan-to-mesh RMSE):

1. the scan's vertices within :data:`CROP_RADIUS_MM` of the nose tip that a
   camera in front of the face sees (:func:`visible_from`; the scan is closed,
   and its hidden inner surfaces are no face shape a photo shows) are scored;
2. the mesh is brought onto the scan by a similarity fitted to landmark pairs
   (Umeyama), then by ICP with scale: the mesh's vertices inside the crop go to
   their closest points on the scan's *surface* (triangles, not vertices: the
   scan's vertices are about 3 mm apart), pairs further apart than
   :data:`ICP_MAX_PAIR_MM` are dropped, and a similarity (Umeyama) is fitted,
   until the pairs' RMS distance settles. Scale is free, so the result does not
   hang on the anatomical scale above (which only sets the crop and the units);
3. each scored scan vertex's distance to the closest point of the aligned mesh
   (signed: + where the scan lies outside the mesh, along the mesh's outward
   normal). A vertex whose closest point lies on an open edge of the mesh has
   no footprint on it: the scan's closed eyelids over the model's eye openings,
   lips over its mouth slit, skin past its outer edge. Those are left out and
   the scored fraction is reported as ``coverage``;
4. RMSE and median of the distances, mm.

Closest points on triangles come from Open3D's ``RaycastingScene``; the ICP
loop is a few lines round it (Open3D's own ICP pairs points with points, and
trimesh's needs rtree for meshes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from landmarks.indices import LEFT_EYE_INNER_CORNER, RIGHT_EYE_INNER_CORNER

from .common import apply_similarity, umeyama

SCAN_FILE = "LeePerrySmith.glb"
SCAN_CREDIT = ('"Infinite, 3D Head Scan" by Lee Perry-Smith (Infinite-Realities), CC BY 3.0')
# Vertices equal to this many decimals (file units, about 50 mm each) are one (the seams' copies).
WELD_DIGITS = 6
# Distance between the inner eye corners (en-en), mm: a typical adult value (anthropometric surveys
# give about 30-35 mm). It is the one anatomical measure the scale hangs on; the bench prints what
# other measures come out at with it.
INTERCANTHAL_MM = 32.0
# MICC protocol: the scan is scored within this distance of the nose tip (mm).
CROP_RADIUS_MM = 95.0
# The nose tip is the most forward (+z) scan vertex within this distance of MediaPipe's (mm):
# MediaPipe's point 4 lies on the tip, a few mm from the most prominent point.
NOSE_TIP_SEARCH_MM = 15.0
NOSE_TIP_LANDMARK = 4
# Scored vertices are seen from this point on the face's +z axis (mm from the nose tip): a portrait
# camera's distance.
FRONT_VIEW_MM = 1000.0
# Visibility rays start this far off the surface along the normal (mm): clear of its own triangles.
VISIBILITY_OFFSET_MM = 0.05
# Head breadth and circumference are measured on horizontal sections this high above the nose tip
# (from, to, how many; mm): above the ears, below the crown.
HEAD_SECTIONS_MM = (40.0, 90.0, 11)
# ICP: pairs further apart are not the same surface (a mesh edge over the scan's ear or neck), mm.
ICP_MAX_PAIR_MM = 10.0
ICP_MAX_ITERATIONS = 60
ICP_TOLERANCE_MM = 1e-4  # stop when the pairs' RMS distance changes by less than this
# ICP uses at most this many mesh vertices (evenly strided): the fine mesh has ~150k.
ICP_MAX_POINTS = 20000
# A closest point whose barycentric coordinate opposite an open edge is below this lies on that edge.
BOUNDARY_BARY_EPS = 1e-4


def default_scan_path() -> Path:
    """``$FACEFIT_SHARED/scan/LeePerrySmith.glb``, or the shared folder beside the repository."""
    shared = os.environ.get("FACEFIT_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return base / "scan" / SCAN_FILE


@dataclass
class ScanMesh:
    """The scan as the file has it: ``vertices`` (V, 3) float64 in the file's units, ``triangles``
    (F, 3) int64 (counter-clockwise from outside), ``normals`` (V, 3) the file's unit vertex normals.
    Axes: +x the subject's left, +y up, +z out of the face."""

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray


def load_scan(path: Optional[os.PathLike] = None) -> ScanMesh:
    """Read the scan (glb, one mesh; default :func:`default_scan_path`), its texture seams welded: vertices
    at the same position become one, with the mean of their normals."""
    import trimesh
    path = Path(path) if path else default_scan_path()
    if not path.is_file():
        raise FileNotFoundError(f"the head scan is missing: expected {path} (set FACEFIT_SHARED to the folder "
                                "holding scan/)")
    scene = trimesh.load(path, process=False)
    meshes = list(scene.geometry.values()) if isinstance(scene, trimesh.Scene) else [scene]
    if len(meshes) != 1:
        raise ValueError(f"{path}: expected one mesh, found {len(meshes)}")
    mesh = scene.to_geometry() if isinstance(scene, trimesh.Scene) else scene  # node transforms applied
    vertices = np.asarray(mesh.vertices, np.float64)
    keep, weld = trimesh.grouping.unique_rows(vertices, digits=WELD_DIGITS)
    normals = np.zeros((len(keep), 3))
    np.add.at(normals, weld, np.asarray(mesh.vertex_normals, np.float64))  # the file's normals
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return ScanMesh(vertices[keep], weld[np.asarray(mesh.faces, np.int64)], normals)


def scale_from_landmarks(landmarks: np.ndarray) -> float:
    """mm per scan unit from (478, 3) landmarks in scan units: :data:`INTERCANTHAL_MM` over the
    distance between the inner eye corners."""
    d = float(np.linalg.norm(landmarks[LEFT_EYE_INNER_CORNER] - landmarks[RIGHT_EYE_INNER_CORNER]))
    if not np.isfinite(d) or d <= 0:
        raise ValueError("the scan's inner eye corners were not found")
    return INTERCANTHAL_MM / d


def pronasale(vertices: np.ndarray, near: np.ndarray, radius: float) -> int:
    """Index of the most forward (+z) vertex within ``radius`` of ``near`` (same units)."""
    close = np.nonzero(np.linalg.norm(vertices - near, axis=1) < radius)[0]
    if close.size == 0:
        raise ValueError("no scan vertex near the nose tip landmark")
    return int(close[np.argmax(vertices[close, 2])])


def visible_from(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, viewpoint: np.ndarray) -> np.ndarray:
    """(V,) bool: the vertex faces ``viewpoint`` (3,) and a ray from it there meets no surface of the mesh."""
    import open3d as o3d
    to_view = np.asarray(viewpoint, np.float64) - vertices
    distance = np.linalg.norm(to_view, axis=1)
    facing = np.einsum("vc,vc->v", to_view, normals) > 0
    origin = vertices + VISIBILITY_OFFSET_MM * normals
    rays = np.concatenate([origin, to_view / distance[:, None]], 1).astype(np.float32)
    # the viewpoint is outside the scan, so anything the ray meets lies between the vertex and it
    blocked = raycasting_scene(vertices, triangles).test_occlusions(o3d.core.Tensor(rays)).numpy().astype(bool)
    return facing & ~blocked


@dataclass
class ScanReference:
    """The scan in mm, origin at the nose tip, axes as the file's (+x subject's left, +y up, +z out).

    ``vertices`` (V, 3) mm, ``triangles`` (F, 3), ``normals`` (V, 3) unit; ``mm_per_unit`` the scale
    applied; ``origin_units`` (3,) the nose tip in file units; ``scored`` (V,) bool, the vertices the
    protocol scores (within :data:`CROP_RADIUS_MM` of the nose tip and seen from the front);
    ``landmarks`` (478, 3) mm, NaN where a point was not found on the scan (None: not read).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    mm_per_unit: float
    origin_units: np.ndarray
    scored: np.ndarray
    landmarks: Optional[np.ndarray] = None

    @classmethod
    def from_scan(cls, scan: ScanMesh, mm_per_unit: float, origin_units: np.ndarray,
                  landmarks_units: Optional[np.ndarray] = None) -> "ScanReference":
        origin = np.asarray(origin_units, np.float64)
        to_mm = lambda p: (np.asarray(p, np.float64) - origin) * mm_per_unit  # noqa: E731
        vertices = to_mm(scan.vertices)
        scored = (np.linalg.norm(vertices, axis=1) < CROP_RADIUS_MM) & visible_from(
            vertices, scan.triangles, scan.normals, np.array([0.0, 0.0, FRONT_VIEW_MM]))
        return cls(vertices, scan.triangles, scan.normals, float(mm_per_unit), origin, scored,
                   None if landmarks_units is None else to_mm(landmarks_units))


def make_reference(scan: ScanMesh, landmarks_units: np.ndarray) -> ScanReference:
    """The reference from the scan and its (478, 3) landmarks in file units (NaN: not found):
    the scale from the inner eye corners, the origin at the pronasale."""
    mm_per_unit = scale_from_landmarks(landmarks_units)
    tip = pronasale(scan.vertices, landmarks_units[NOSE_TIP_LANDMARK], NOSE_TIP_SEARCH_MM / mm_per_unit)
    return ScanReference.from_scan(scan, mm_per_unit, scan.vertices[tip], landmarks_units)


def head_size_mm(reference: ScanReference) -> Tuple[float, float]:
    """(breadth, circumference) of the head in mm, a check on the scale: the widest and the longest
    horizontal section of the scan between :data:`HEAD_SECTIONS_MM` above the nose tip (the cranium
    above the ears; the scan is bald, so this is the head itself)."""
    import trimesh
    mesh = trimesh.Trimesh(reference.vertices, reference.triangles, process=False)
    breadth = circumference = 0.0
    for height in np.linspace(*HEAD_SECTIONS_MM):
        section = mesh.section(plane_origin=[0.0, height, 0.0], plane_normal=[0.0, 1.0, 0.0])
        if section is None:
            continue
        loops = section.discrete
        breadth = max(breadth, float(np.ptp(np.concatenate(loops)[:, 0])))
        circumference = max(circumference, max(float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())
                                               for p in loops))
    return breadth, circumference


# --------------------------------------------------------------------------- closest points

def raycasting_scene(vertices: np.ndarray, triangles: np.ndarray):
    """An Open3D ``RaycastingScene`` of one mesh ((V, 3) vertices, (F, 3) triangles), float32 inside."""
    import open3d as o3d
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(triangles, np.uint32)))
    return scene


def closest_points(scene, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points of an Open3D scene to (N, 3) ``points``: (points (N, 3), triangle ids (N,),
    barycentrics (N, 3) of the point in its triangle's corners, unit triangle normals (N, 3))."""
    import open3d as o3d
    r = scene.compute_closest_points(o3d.core.Tensor(np.ascontiguousarray(points, np.float32)))
    uv = r["primitive_uvs"].numpy().astype(np.float64)
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)  # Open3D: p = (1-u-v) a + u b + v c
    return (r["points"].numpy().astype(np.float64), r["primitive_ids"].numpy().astype(np.int64), bary,
            r["primitive_normals"].numpy().astype(np.float64))


def open_edges(triangles: np.ndarray, n_vertices: int) -> Tuple[np.ndarray, np.ndarray]:
    """Where a mesh is open: ((F, 3) bool, the edge opposite corner k of triangle f belongs to one
    triangle only; (F, 3) bool, corner k is a vertex on such an edge)."""
    tris = np.asarray(triangles, np.int64)
    opposite = np.stack([tris[:, [1, 2]], tris[:, [2, 0]], tris[:, [0, 1]]], 1)  # (F, 3, 2)
    lo, hi = opposite.min(-1), opposite.max(-1)
    key = lo * n_vertices + hi
    uniq, counts = np.unique(key, return_counts=True)
    edge_open = counts[np.searchsorted(uniq, key)] == 1
    open_vertex = np.zeros(n_vertices, bool)
    open_vertex[lo[edge_open]] = True
    open_vertex[hi[edge_open]] = True
    return edge_open, open_vertex[tris]


def on_open_edge(tri_ids: np.ndarray, bary: np.ndarray, edge_open: np.ndarray, corner_open: np.ndarray) -> np.ndarray:
    """(N,) bool: the closest point (triangle ``tri_ids``, barycentrics ``bary``) lies on an open edge."""
    on_edge = (bary < BOUNDARY_BARY_EPS) & edge_open[tri_ids]
    at_corner = (bary > 1.0 - BOUNDARY_BARY_EPS) & corner_open[tri_ids]
    return (on_edge | at_corner).any(1)


# --------------------------------------------------------------------------- the protocol

@dataclass
class ScanComparison:
    """A mesh against the scan. ``signed_mm`` (C,) per scored scan vertex (the reference's ``scored``
    order): + where the scan lies outside the mesh, NaN where the vertex has no footprint on it.
    ``scale``, ``rotation`` (3, 3), ``translation`` (3,): the similarity that took the mesh onto the
    scan (``s R x + t``, mm)."""

    rmse_mm: float
    median_mm: float
    coverage: float
    signed_mm: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    icp_iterations: int


def landmark_alignment(reference: ScanReference, mesh_landmarks: np.ndarray,
                       use: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) taking (K, 3) mesh landmarks onto the reference's (Umeyama), over the pairs
    both have (finite) and ``use`` (K,) bool allows."""
    if reference.landmarks is None:
        raise ValueError("the reference has no landmarks")
    ok = np.isfinite(reference.landmarks).all(1) & np.isfinite(mesh_landmarks).all(1)
    if use is not None:
        ok &= use
    if ok.sum() < 3:
        raise ValueError("fewer than 3 landmark pairs")
    return umeyama(mesh_landmarks[ok], reference.landmarks[ok])


def icp_similarity(reference: ScanReference, vertices: np.ndarray, init: Tuple[float, np.ndarray, np.ndarray],
                   scan_scene=None) -> Tuple[Tuple[float, np.ndarray, np.ndarray], int]:
    """ICP with scale from ``init``: ((s, R, t) taking ``vertices`` (V, 3) onto the scan, iterations).

    Each round pairs the mesh vertices that the current similarity puts inside the crop with their
    closest points on the whole scan (so a vertex near the crop's edge finds its own partner), drops
    pairs over :data:`ICP_MAX_PAIR_MM` apart and refits the similarity to the pairs.
    """
    scene = scan_scene if scan_scene is not None else raycasting_scene(reference.vertices, reference.triangles)
    src = np.asarray(vertices, np.float64)
    src = src[::max(1, -(-len(src) // ICP_MAX_POINTS))]
    s, rot, t = init
    previous = np.inf
    for iteration in range(1, ICP_MAX_ITERATIONS + 1):
        moved = apply_similarity(src, s, rot, t)
        inside = np.linalg.norm(moved, axis=1) < CROP_RADIUS_MM
        target = closest_points(scene, moved[inside])[0]
        dist = np.linalg.norm(target - moved[inside], axis=1)
        pair = dist < ICP_MAX_PAIR_MM
        if pair.sum() < 3:
            raise ValueError("ICP: the mesh is nowhere near the scan's crop")
        rms = float(np.sqrt(np.mean(dist[pair] ** 2)))
        s, rot, t = umeyama(src[inside][pair], target[pair])
        if abs(previous - rms) < ICP_TOLERANCE_MM:
            break
        previous = rms
    return (s, rot, t), iteration


def compare_with_scan(reference: ScanReference, vertices: np.ndarray, triangles: np.ndarray,
                      init: Tuple[float, np.ndarray, np.ndarray], scan_scene=None) -> ScanComparison:
    """The protocol (module docstring) for a mesh (``vertices`` (V, 3), ``triangles`` (F, 3), any frame
    and scale) from ``init``, a similarity taking it near the scan (:func:`landmark_alignment`)."""
    (s, rot, t), iterations = icp_similarity(reference, vertices, init, scan_scene)
    aligned = apply_similarity(vertices, s, rot, t)
    tris = np.asarray(triangles, np.int64)
    query = reference.vertices[reference.scored]
    points, tri_ids, bary, normals = closest_points(raycasting_scene(aligned, tris), query)
    edge_open, corner_open = open_edges(tris, len(aligned))
    covered = ~on_open_edge(tri_ids, bary, edge_open, corner_open)
    offset = query - points
    signed = np.linalg.norm(offset, axis=1) * np.sign(np.einsum("nc,nc->n", offset, normals))
    signed = np.where(covered, signed, np.nan)
    d = np.abs(signed[covered])
    return ScanComparison(rmse_mm=float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan"),
                          median_mm=float(np.median(d)) if d.size else float("nan"),
                          coverage=float(covered.mean()), signed_mm=signed, scale=float(s), rotation=rot,
                          translation=t, icp_iterations=iterations)
