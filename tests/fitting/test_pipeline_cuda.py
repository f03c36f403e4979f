"""The whole pipeline on a CUDA device (needs CUDA and nvdiffrast): real photos through coarse, medium and fine.

What it guards: every stage keeps its tensors on one device (the 3DDFA_V2 start's pose and the SfS's free
depth change each once mixed a CPU tensor into CUDA work), and a CUDA fit is as good as a CPU one.
Measured on the H200 machine (2026-12-04; `fit-face --device cuda` on the 8 shared photos, the 3DDFA_V2
start) against the same fits on the 2-core CPU machine: re-render PSNR 38.15 vs 38.11 dB and SSIM 0.9387
vs 0.9386 (means), landmark error after medium within 0.0005 IOD of the CPU's on every photo; on these two
frontal photos PSNR 38.09 / 41.43 dB and landmark error 1.83 / 1.54 % IOD. The two backends' coarse
meshes lie 0.07-0.59 mm apart (mean per photo): nvdiffrast's antialiased silhouettes give the photometric
polish gradients the CPU rasteriser has not.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fitting.rendering.renderer import _nvdiffrast_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "landmarks"))
from shared_3ddfa import DDFA_DIR  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not _nvdiffrast_available(), reason="needs CUDA and nvdiffrast.torch")]


def test_photos_fit_on_cuda_through_every_stage(face_model, good_photos):
    from fitting.api import FaceFitter
    fitter = FaceFitter(("coarse", "medium", "fine"), model=face_model, device="cuda",
                        initializer="3ddfa_v2", regressor_dir=str(DDFA_DIR))
    try:
        assert fitter.renderer.backend == "nvdiffrast"
        results = fitter.fit_many([str(p) for p in good_photos])
    finally:
        fitter.close()
    for r in results:
        assert r.ok, r.error
        assert r.params["landmark_sources"] and r.params["fine"]["psnr_db"] > 36.0  # measured 38.1-41.4
        assert r.params["fine"]["ssim"] > 0.92                                      # measured 0.935-0.942
        assert r.params["landmark_error_iod"]["medium"] < 0.025                    # measured 0.015-0.018
