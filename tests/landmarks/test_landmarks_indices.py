"""Landmark index groups: derived from MediaPipe's edge sets, consistent, disjoint."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from landmarks import indices as I

# MediaPipe's edge sets as stored in landmarks/data (no mediapipe needed); see the cross-check below.
fmc = SimpleNamespace(**I.EDGES)


def test_stored_edge_sets_are_mediapipes():
    """landmarks/data/facemesh_edges.json holds exactly mediapipe 0.10.21's face_mesh_connections."""
    mp = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections",
                             reason="mediapipe==0.10.21 not installed (optional extra)")
    names = sorted(n for n in dir(mp) if n.startswith("FACEMESH_"))
    assert names == sorted(I.EDGES)
    for name in names:
        assert I.EDGES[name] == frozenset(getattr(mp, name)), name
    assert len(I.EDGES["FACEMESH_TESSELATION"]) == 2556


def _undirected(edges):
    return {frozenset(e) for e in edges}


@pytest.mark.parametrize("loop, edges", [
    (I.FACE_OVAL_LOOP, fmc.FACEMESH_FACE_OVAL),
    (I.LEFT_EYE_LOOP, fmc.FACEMESH_LEFT_EYE),
    (I.RIGHT_EYE_LOOP, fmc.FACEMESH_RIGHT_EYE),
    (I.LIPS_OUTER_LOOP, fmc.FACEMESH_LIPS),
    (I.LIPS_INNER_LOOP, fmc.FACEMESH_LIPS),
])
def test_loops_walk_mediapipe_edges(loop, edges):
    """Consecutive loop vertices (and last -> first) are MediaPipe edges: a valid polygon order."""
    und = _undirected(edges)
    assert len(set(loop)) == len(loop) >= 3
    for a, b in zip(loop, loop[1:] + loop[:1]):
        assert frozenset((a, b)) in und


def test_lips_split_into_outer_and_inner():
    assert set(I.LIPS_OUTER_LOOP).isdisjoint(I.LIPS_INNER_LOOP)
    assert len(I.LIPS_OUTER_LOOP) + len(I.LIPS_INNER_LOOP) == len({i for e in fmc.FACEMESH_LIPS for i in e})
    assert {61, 291} <= set(I.LIPS_OUTER_LOOP) and {78, 308} <= set(I.LIPS_INNER_LOOP)


def test_brow_chains_are_edge_paths_in_same_direction():
    for chains, edges in ((I.LEFT_BROW_CHAINS, fmc.FACEMESH_LEFT_EYEBROW),
                          (I.RIGHT_BROW_CHAINS, fmc.FACEMESH_RIGHT_EYEBROW)):
        assert len(chains) == 2
        for ch in chains:
            for a, b in zip(ch, ch[1:]):
                assert (a, b) in edges      # walked along the edge direction: temple -> nose
        assert len(set(chains[0]) | set(chains[1])) == 10


def test_iris_groups_include_centres():
    assert I.LEFT_IRIS[0] == I.LEFT_IRIS_CENTER == 473 and set(I.LEFT_IRIS) == set(range(473, 478))
    assert I.RIGHT_IRIS[0] == I.RIGHT_IRIS_CENTER == 468 and set(I.RIGHT_IRIS) == set(range(468, 473))


def test_groups_are_disjoint_and_in_range():
    names = list(I.GROUPS)
    for i, a in enumerate(names):
        idx = np.asarray(I.GROUPS[a])
        assert idx.min() >= 0 and idx.max() < I.NUM_LANDMARKS
        for b in names[i + 1:]:
            assert set(I.GROUPS[a]).isdisjoint(I.GROUPS[b]), (a, b)


def test_point_groups_labels_match_groups():
    labels = I.point_groups()
    assert labels.shape == (478,)
    name = lambda i: I.GROUP_NAMES[labels[i]]
    assert all(name(i) == "contour" for i in I.FACE_OVAL_LOOP)
    assert all(name(i) == "iris" for i in I.LEFT_IRIS + I.RIGHT_IRIS)
    assert all(name(i) == "eyes" for i in I.LEFT_EYE_LOOP)
    assert all(name(i) == "mouth" for i in I.LIPS_INNER_LOOP)
    assert all(name(i) == "brows" for i in I.RIGHT_BROW)
    assert all(name(i) == "nose" for i in I.NOSE)
    counts = np.bincount(labels, minlength=len(I.GROUP_NAMES))
    assert counts.sum() == 478 and (counts > 0).all()
    assert counts[I.GROUP_NAMES.index("mouth")] == 40


def test_group_weights():
    w = I.group_weights({"eyes": 1.0, "nose": 1.0, "contour": 0.25}, default=0.1)
    assert w.shape == (478,) and w.dtype == np.float32
    assert w[I.LEFT_EYE_LOOP[0]] == 1.0 and w[I.NOSE[0]] == 1.0
    assert w[I.FACE_OVAL_LOOP[3]] == 0.25 and w[I.LIPS_OUTER_LOOP[0]] == pytest.approx(0.1)
    with pytest.raises(KeyError, match="unknown landmark group"):
        I.group_weights({"ears": 1.0})
