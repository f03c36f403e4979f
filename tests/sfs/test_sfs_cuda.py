"""refine_depth on a CUDA device gives the CPU's surface (needs CUDA; nvdiffrast is not involved).

The SfS is plain torch, so the same code runs on either device; what can differ is the order of
float32 reductions, which nudges every Adam step. The check is on what a user gets: the refined
normals' error against the truth, and the normals themselves pixel by pixel.
"""
import pytest
import torch

from sfs.refine import SfsSettings, refine_depth
from sfs_synth import face_scene, mean_normal_error

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _to(sc, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in sc.items()}


def _refine(sc):
    return refine_depth(sc["image"], sc["depth_smooth"], sc["mask"], sc["intrinsics"], sc["labels"],
                        SfsSettings())


def test_refine_depth_on_cuda_matches_the_cpu():
    cpu = face_scene(256)
    gpu = _to(cpu, "cuda")
    r_cpu, r_gpu = _refine(cpu), _refine(gpu)
    # every output stays on the device it was given (no silent copies back to the host)
    for name in ("depth", "normals", "albedo", "shading", "light", "rendered"):
        assert getattr(r_gpu, name).device.type == "cuda", name
    m = cpu["mask"]
    e0 = mean_normal_error(cpu["normals_smooth"], cpu["normals"], m)
    e_cpu = mean_normal_error(r_cpu.normals, cpu["normals"], m)
    e_gpu = mean_normal_error(r_gpu.normals.cpu(), cpu["normals"], m)
    # the normals of the two runs, pixel by pixel (degrees)
    cos = (r_cpu.normals * r_gpu.normals.cpu()).sum(-1).clamp(-1, 1)
    apart = torch.rad2deg(torch.acos(cos))[m]
    print(f"\nmean normal error vs truth: start {e0:.3f}, cpu {e_cpu:.3f}, cuda {e_gpu:.3f} deg; "
          f"cpu vs cuda normals: mean {float(apart.mean()):.3f}, p99 {float(apart.quantile(0.99)):.3f} deg")
    assert e_gpu <= 0.8 * e0                   # the GPU run improves the shape as the CPU's does
    assert abs(e_gpu - e_cpu) <= 0.05 * e_cpu  # and as much
    assert float(apart.mean()) < 0.5
    dd = (r_cpu.depth - r_gpu.depth.cpu())[m].abs()
    assert float(dd.mean()) < 0.05             # mm; the bumps are 0.5 mm
