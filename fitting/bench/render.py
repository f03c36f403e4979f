"""Renderer speed: forward and forward+backward per backend, batch and image size.

Forward = rasterise + interpolate vertex normals + per-vertex albedo + SH
shading; backward = an L2 loss on the image, gradients to the vertices, the
SH coefficients and the albedo. After one warm-up, ``--repeats`` runs; the
table gives the median and, in brackets, the minimum (the better estimate on a
machine shared with other work).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch

from fitting.camera import Camera
from fitting.rendering.renderer import Renderer, _nvdiffrast_available
from morphable.geometry import vertex_normals
from fitting.rendering.shaded_mesh import sh_shading_packed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sides in pixels")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", nargs="+", choices=["cpu", "cuda"], default=None,
                   help="renderers to time (default: cpu, and cuda where nvdiffrast runs)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (else the cache / env)")
    p.add_argument("--threads", type=int, default=0, help="torch and Open3D threads (0: library defaults)")
    p.add_argument("--malloc-tune", action="store_true",
                   help="raise glibc's mmap/trim thresholds first: on VMs where page faults are expensive, "
                        "freeing and re-faulting every large tensor dominates the CPU time")


def _mesh(model_dir):
    """The ICT mean face (region 'face'), or an icosphere of similar size if the model is absent."""
    try:
        from morphable import load_ict
        m = load_ict(model_dir, region="face", progress=False, download=False)
        return m.mean, m.triangles, "ICT mean face"
    except Exception as exc:  # the bench still runs without the model
        import trimesh
        s = trimesh.creation.icosphere(subdivisions=5, radius=90.0)
        v = torch.tensor(s.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, 70.0])
        return v, torch.tensor(s.faces, dtype=torch.int64), f"icosphere (no ICT model: {exc})"


def _step(renderer, verts, tris, cam, sh, albedo, size, backward):
    v = verts.clone().requires_grad_(backward)
    s = sh.clone().requires_grad_(backward)
    a = albedo.clone().requires_grad_(backward)
    vc = cam.to_camera(v)
    frags = renderer.rasterize(vc, tris, cam.intrinsics, size, size)
    # shade the covered pixels only (packed), then one scatter into the image
    n = torch.nn.functional.normalize(renderer.interpolate(vertex_normals(vc, tris), frags, packed=True),
                                      dim=-1, eps=1e-12)
    shading = sh_shading_packed(n, s, frags.pixels // (size * size))
    img = frags.scatter(renderer.interpolate(a, frags, packed=True) * shading)
    img = renderer.antialias(img, frags)
    if backward:
        ((img - 0.5) ** 2).mean().backward()
    if verts.is_cuda:
        torch.cuda.synchronize()


def run(args) -> int:
    if args.malloc_tune:
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        except OSError:
            print("malloc tuning unavailable (not glibc)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    verts0, tris, what = _mesh(args.model_dir)
    backends = args.backends or ["cpu"] + (["cuda"] if _nvdiffrast_available() else [])
    print(f"mesh: {what}, {verts0.shape[0]} vertices, {tris.shape[0]} triangles; "
          f"torch threads {torch.get_num_threads()}; malloc tune {'on' if args.malloc_tune else 'off'}")
    print(f"{'backend':<11}{'batch':>6}{'size':>6}{'forward ms':>18}{'fwd+bwd ms':>18}{'coverage':>10}")
    for backend in backends:
        r = Renderer(backend, threads=args.threads)
        dev = r.device
        for b in args.batches:
            for size in args.sizes:
                verts = verts0.to(dev)[None].expand(b, -1, -1).contiguous()
                cam = Camera.from_image_size(size, size, batch=b, device=dev).look_at_face(verts, fill=0.8)
                sh = torch.zeros(b, 9, 3, device=dev)
                sh[:, 0] = 1.0
                sh[:, 2] = 0.5
                albedo = torch.full((b, verts.shape[1], 3), 0.6, device=dev)
                times = {}
                for backward in (False, True):
                    _step(r, verts, tris.to(dev), cam, sh, albedo, size, backward)  # warm-up
                    ts = []
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        _step(r, verts, tris.to(dev), cam, sh, albedo, size, backward)
                        ts.append(time.perf_counter() - t0)
                    times[backward] = f"{statistics.median(ts) * 1e3:.1f} ({min(ts) * 1e3:.1f})"
                cov = float(r.rasterize(cam.to_camera(verts)[:1], tris.to(dev), cam.intrinsics[:1], size,
                                        size).mask.float().mean())
                print(f"{r.backend:<11}{b:>6}{size:>6}{times[False]:>18}{times[True]:>18}{cov:>10.2f}")
    return 0
