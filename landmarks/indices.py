"""Named groups of the 478 MediaPipe Face Mesh landmarks.

Indices 0..467 are the face mesh, 468..477 the iris points added by
``refine_landmarks=True``: 468 = centre of the subject's right iris,
469..472 its rim; 473 = centre of the subject's left iris, 474..477 its rim.

**Sides** follow MediaPipe: "left" is the *subject's* left, which is on the
*image right* in a frontal, unmirrored photo (``FACEMESH_LEFT_EYE`` holds
points 263/362, which have the larger u).

Every group is derived from MediaPipe's own edge sets
(``mediapipe.solutions.face_mesh_connections`` of mediapipe 0.10.21, stored
in ``landmarks/data/facemesh_edges.json`` by ``tools/make_facemesh_data.py``;
:data:`EDGES`) rather than typed by hand:

* ``*_LOOP`` tuples are closed polygons, vertices in walking order (the last
  vertex connects back to the first) - ready for ``cv2.fillPoly``.
* ``*_BROW_CHAINS`` are the two open polylines (upper and lower edge of the
  brow), both walked from the temple end to the nose end.
* ``NOSE`` is an unordered set (bridge line plus nostril outline); use its
  convex hull as an area.
* ``MESH_TRIANGLES`` (852, 3): the face mesh's triangles, recovered from
  ``FACEMESH_TESSELATION`` (an edge set) as its 3-cycles; the mesh is a disc
  with three holes (eyes, mouth opening).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np

from .model_files import read_json

__all__ = [
    "NUM_LANDMARKS", "NUM_MESH_LANDMARKS",
    "RIGHT_IRIS_CENTER", "LEFT_IRIS_CENTER",
    "RIGHT_EYE_OUTER_CORNER", "RIGHT_EYE_INNER_CORNER", "LEFT_EYE_INNER_CORNER", "LEFT_EYE_OUTER_CORNER",
    "UPPER_LIP_INNER", "LOWER_LIP_INNER",
    "FACE_OVAL_LOOP", "LEFT_EYE_LOOP", "RIGHT_EYE_LOOP", "LIPS_OUTER_LOOP", "LIPS_INNER_LOOP",
    "LEFT_BROW_CHAINS", "RIGHT_BROW_CHAINS", "LEFT_BROW", "RIGHT_BROW",
    "LEFT_IRIS", "RIGHT_IRIS", "NOSE", "MESH_TRIANGLES", "mesh_ring_distance", "GROUPS",
    "GROUP_NAMES", "point_groups", "group_weights", "EDGES",
]

EDGES: dict[str, frozenset[tuple[int, int]]] = {
    name: frozenset((int(a), int(b)) for a, b in pairs)
    for name, pairs in read_json("facemesh_edges.json")["edges"].items()}
"""MediaPipe's ``FACEMESH_*`` edge sets by name (e.g. ``EDGES["FACEMESH_LIPS"]``): directed ``(a, b)`` pairs,
as ``face_mesh_connections`` defines them."""

NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468

RIGHT_IRIS_CENTER = 468   # subject's right (image left, frontal photo)
LEFT_IRIS_CENTER = 473    # subject's left (image right)
# Eye corners (canthi). Facing the photo: 33 is the far left corner, 263 the far right.
RIGHT_EYE_OUTER_CORNER = 33
RIGHT_EYE_INNER_CORNER = 133
LEFT_EYE_INNER_CORNER = 362
LEFT_EYE_OUTER_CORNER = 263
# The lips' middle on the mouth's opening: upper lip's lower edge, lower lip's upper edge.
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14


def _walk(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Split an edge set into its connected components, each as an ordered vertex list.

    Every vertex must have at most two neighbours (MediaPipe's contours are
    simple polylines/polygons; e.g. an eye is drawn as two lids from corner
    to corner, so edge *directions* alone do not give an order - adjacency
    does). A cycle is returned without repeating its first vertex. An open
    path starts at the end that the edge directions start from (a vertex no
    edge points to), which for the brows is the temple end.
    """
    edges = list(edges)
    adj: dict[int, set[int]] = defaultdict(set)
    has_incoming: set[int] = set()
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
        has_incoming.add(b)
    bad = [v for v, n in adj.items() if len(n) > 2]
    if bad:
        raise ValueError(f"vertices {sorted(bad)} have more than two neighbours; not simple contours")
    ends = sorted(v for v, n in adj.items() if len(n) == 1)
    # Open paths first, from their source end; then whatever is left are cycles.
    starts = [v for v in ends if v not in has_incoming] + ends + sorted(adj)
    seen: set[int] = set()
    parts: list[list[int]] = []
    for s in starts:
        if s in seen:
            continue
        path = [s]
        seen.add(s)
        while True:
            step = sorted(n for n in adj[path[-1]] if n not in seen)
            if not step:
                break
            path.append(step[0])
            seen.add(step[0])
        parts.append(path)
    return parts


def _single_loop(edges) -> tuple[int, ...]:
    parts = _walk(edges)
    if len(parts) != 1:
        raise ValueError(f"expected one closed loop, got {len(parts)} parts")
    return tuple(parts[0])


def _brow_chains(edges) -> tuple[tuple[int, ...], tuple[int, ...]]:
    parts = _walk(edges)
    if len(parts) != 2:
        raise ValueError(f"expected two brow polylines, got {len(parts)}")
    return tuple(parts[0]), tuple(parts[1])


FACE_OVAL_LOOP = _single_loop(EDGES["FACEMESH_FACE_OVAL"])
LEFT_EYE_LOOP = _single_loop(EDGES["FACEMESH_LEFT_EYE"])
RIGHT_EYE_LOOP = _single_loop(EDGES["FACEMESH_RIGHT_EYE"])

# FACEMESH_LIPS holds two loops. The outer one is the one through point 0
# (top of the upper lip's vermilion border, under the philtrum); the inner one
# runs along the mouth opening.
_lip_loops = _walk(EDGES["FACEMESH_LIPS"])
if len(_lip_loops) != 2:
    raise ValueError(f"expected two lip loops, got {len(_lip_loops)}")
LIPS_OUTER_LOOP = tuple(next(p for p in _lip_loops if 0 in p))
LIPS_INNER_LOOP = tuple(next(p for p in _lip_loops if 0 not in p))

LEFT_BROW_CHAINS = _brow_chains(EDGES["FACEMESH_LEFT_EYEBROW"])
RIGHT_BROW_CHAINS = _brow_chains(EDGES["FACEMESH_RIGHT_EYEBROW"])
LEFT_BROW = tuple(sorted(set(LEFT_BROW_CHAINS[0]) | set(LEFT_BROW_CHAINS[1])))
RIGHT_BROW = tuple(sorted(set(RIGHT_BROW_CHAINS[0]) | set(RIGHT_BROW_CHAINS[1])))

# Iris rims come as 4-edge loops without the centre; add the centre point.
LEFT_IRIS = (LEFT_IRIS_CENTER,) + _single_loop(EDGES["FACEMESH_LEFT_IRIS"])
RIGHT_IRIS = (RIGHT_IRIS_CENTER,) + _single_loop(EDGES["FACEMESH_RIGHT_IRIS"])

NOSE = tuple(sorted({i for e in EDGES["FACEMESH_NOSE"] for i in e}))


def _adjacency(edges) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    return adj


def _triangles(edges) -> np.ndarray:
    """The faces of a triangle mesh given only its edges: every 3-cycle, less the "separating" ones.

    A 3-cycle that is not a face (three edges that each already border two
    faces) would make those edges border three; such cycles are dropped,
    so that every edge borders one (boundary) or two faces.
    """
    adj = _adjacency(edges)
    cycles = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    uses: dict[tuple[int, int], int] = defaultdict(int)
    for a, b, c in cycles:
        for e in ((a, b), (a, c), (b, c)):
            uses[e] += 1
    faces = [t for t in cycles if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    return np.array(faces, dtype=np.int64)


MESH_TRIANGLES = _triangles(EDGES["FACEMESH_TESSELATION"])


def mesh_ring_distance(sources: Iterable[int]) -> np.ndarray:
    """(468,) int: how many mesh edges each point is from the nearest of ``sources`` (0 on them)."""
    adj = _adjacency(EDGES["FACEMESH_TESSELATION"])
    dist = np.full(NUM_MESH_LANDMARKS, -1, dtype=np.int64)
    frontier = sorted(set(sources))
    dist[frontier] = 0
    while frontier:
        nxt = sorted({u for v in frontier for u in adj[v] if dist[u] < 0})
        dist[nxt] = dist[frontier[0]] + 1
        frontier = nxt
    return dist


GROUPS: dict[str, tuple[int, ...]] = {
    "face_oval": FACE_OVAL_LOOP,
    "left_eye": LEFT_EYE_LOOP,
    "right_eye": RIGHT_EYE_LOOP,
    "left_brow": LEFT_BROW,
    "right_brow": RIGHT_BROW,
    "lips_outer": LIPS_OUTER_LOOP,
    "lips_inner": LIPS_INNER_LOOP,
    "nose": NOSE,
    "left_iris": LEFT_IRIS,
    "right_iris": RIGHT_IRIS,
}
"""Every named group, name -> landmark indices (loops in walking order)."""

# ------------------------------------------------------------------ per-point labels

GROUP_NAMES: tuple[str, ...] = ("other", "contour", "eyes", "iris", "nose", "brows", "mouth")
"""Label values of :func:`point_groups`: ``GROUP_NAMES[label]`` names a point's group.

``other`` = mesh points on none of the contours (cheeks, forehead, ...);
``contour`` = face oval; ``eyes`` = eyelid loops of both eyes; ``iris`` =
both irises (centre and rim); ``mouth`` = outer and inner lip loops.
"""


def point_groups() -> np.ndarray:
    """``(478,)`` int8 group label per landmark; values index :data:`GROUP_NAMES`.

    Groups do not overlap in MediaPipe's topology; should a point ever be in
    two, the later entry of ``GROUP_NAMES`` wins.
    """
    labels = np.zeros(NUM_LANDMARKS, np.int8)
    members = {
        "contour": FACE_OVAL_LOOP,
        "eyes": LEFT_EYE_LOOP + RIGHT_EYE_LOOP,
        "iris": LEFT_IRIS + RIGHT_IRIS,
        "nose": NOSE,
        "brows": LEFT_BROW + RIGHT_BROW,
        "mouth": LIPS_OUTER_LOOP + LIPS_INNER_LOOP,
    }
    for name in GROUP_NAMES[1:]:
        labels[list(members[name])] = GROUP_NAMES.index(name)
    return labels


def group_weights(weights: Mapping[str, float], default: float = 0.0) -> np.ndarray:
    """``(478,)`` float32 per-landmark weights from per-group weights.

    Example: ``group_weights({"eyes": 1, "iris": 1, "nose": 1, "brows": .5,
    "mouth": .5, "contour": .2})`` weights eyes and nose fully, brows and mouth
    half and the (pose-dependent, less reliable) contour little; points in
    groups not named get ``default``.

    Raises:
        KeyError: a key is not one of :data:`GROUP_NAMES`.
    """
    unknown = set(weights) - set(GROUP_NAMES)
    if unknown:
        raise KeyError(f"unknown landmark group(s) {sorted(unknown)}; known: {list(GROUP_NAMES)}")
    table = np.full(len(GROUP_NAMES), default, np.float32)
    for name, w in weights.items():
        table[GROUP_NAMES.index(name)] = w
    return table[point_groups()]
