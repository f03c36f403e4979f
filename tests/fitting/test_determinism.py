"""The same photo with the same thread count gives the same meshes, to the bit: in one process and
in two fresh processes.

Two causes made the coarse stage unrepeatable (the photometric polish then amplified a few ulp
into up to 0.18 mm with one thread, 1.2 mm with two):

- ``torch.linalg.lstsq``'s default CPU driver (gelsy) in the affine pose solve returned results
  that depended on what the allocator's memory held before the call;
- the backward of advanced indexing (``verts[:, tris[:, i]]`` in the vertex normals) accumulates
  with ``index_put``, whose CPU kernel adds repeated indices in thread order with two threads or
  more.

The end-to-end checks run with two threads (what a 2-core machine uses by default), so both
causes are exercised, on 256 px crops with a 20-step polish to keep them quick (the causes act
in every step; any difference at all fails them).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fitting.api import FaceFitter
from fitting.stages.coarse import CoarseSettings
from fitting.stages.landmark_fit import affine_pose
from morphable.geometry import vertex_normals

REPO = Path(__file__).resolve().parents[2]
THREADS = 2  # torch threads for the end-to-end checks (both in-process fits and the subprocesses)
SAME_MM = 1e-6  # mm: the requirement (in practice the meshes are bit-identical)
CROP = 256
QUICK_POLISH_STEPS = 20


@pytest.fixture
def threads():
    """Run with THREADS torch threads; the session's setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield THREADS
    torch.set_num_threads(before)


def _scribble_on_freed_memory(value: int) -> None:
    """Leave ``value`` in freed blocks of every small size, as earlier work in a process does
    (the next small allocations reuse them without clearing)."""
    blocks = [torch.full((n,), value, dtype=torch.int32) for n in range(1, 257)]
    del blocks


def test_affine_pose_does_not_read_leftover_memory():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(1, 478, 3, generator=g) * 50.0
    uv = torch.rand(1, 478, 2, generator=g) * 512.0
    weights = torch.rand(1, 478, generator=g)
    k = torch.tensor([[600.0, 600.0, 256.0, 256.0]])
    results = []
    for value in (-3, -1, 0, 1, 2, 3, 7, 100, 2 ** 30):
        _scribble_on_freed_memory(value)
        results.append(affine_pose(points, uv, weights, k))
    for rot, t in results[1:]:
        assert torch.equal(rot, results[0][0]) and torch.equal(t, results[0][1])


def test_vertex_normal_gradients_repeat_with_threads(face_model, threads):
    weights = torch.randn(1, face_model.n_vertices, 3, generator=torch.Generator().manual_seed(0))

    def gradient():
        verts = face_model.mean[None].clone().requires_grad_(True)
        (vertex_normals(verts, face_model.triangles) * weights).sum().backward()
        return verts.grad

    first = gradient()
    for _ in range(10):
        assert torch.equal(gradient(), first)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


def _meshes(result):
    out = {stage: mesh.vertices for stage, mesh in result.meshes.items()}
    out["id_coeffs"] = result.params["id_coeffs"]
    return out


def _assert_same(a, b, what):
    assert a.keys() == b.keys()
    for key in a:
        gap = float(np.abs(a[key] - b[key]).max())
        assert gap <= SAME_MM, f"{what}: {key} differs by {gap:.3g}"


def test_same_photo_twice_in_one_process(face_model, astronaut, threads):
    with FaceFitter(("coarse", "medium"), model=face_model, device="cpu", crop_size=CROP,
                    coarse=CoarseSettings(photometric_steps=QUICK_POLISH_STEPS)) as fitter:
        first = _meshes(fitter.fit(astronaut))
        second = _meshes(fitter.fit(astronaut))
    assert {"coarse", "medium", "neutral"} <= first.keys()
    _assert_same(first, second, "two fits in one process")


CHILD = """
import sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[1]))
from skimage import data
from fitting import FaceFitter
from fitting.stages.coarse import CoarseSettings
settings = CoarseSettings(photometric_steps=int(sys.argv[5]))
with FaceFitter(("coarse",), model_dir=sys.argv[2], device="cpu", crop_size=int(sys.argv[4]),
                coarse=settings) as fitter:
    result = fitter.fit(data.astronaut())
np.savez(sys.argv[3], coarse=result.meshes["coarse"].vertices, id_coeffs=result.params["id_coeffs"])
"""


def test_same_photo_in_two_fresh_processes(ict_dir, tmp_path):
    """Coarse only (the stage that was not repeatable). One after the other: each uses THREADS
    threads. ``cwd=REPO`` puts this checkout's packages first on the child's path."""
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}.npz"
        done = subprocess.run([sys.executable, "-c", CHILD, str(THREADS), str(ict_dir), str(out), str(CROP),
                               str(QUICK_POLISH_STEPS)], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(dict(np.load(out)))
    _assert_same(runs[0], runs[1], "two processes")
