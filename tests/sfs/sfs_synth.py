"""Synthetic image-space ground truth for the sfs tests (no mesh, no model)."""
from __future__ import annotations

import math

import torch

from sfs.projection import pixel_grid


def rays(h, w, intr):
    """(B, H, W, 3) camera-space ray directions with z = -1 (so the point is depth * ray)."""
    b = intr.shape[0]
    g = pixel_grid(h, w, intr.device, intr.dtype)[None].expand(b, -1, -1, -1)
    fx, fy, cx, cy = (intr[:, i, None, None] for i in range(4))
    # same convention as sfs.projection.pixel_to_camera with depth 1
    from sfs.projection import pixel_to_camera
    return pixel_to_camera(g.reshape(b, -1, 2), torch.ones(b, h * w, dtype=intr.dtype, device=intr.device),
                           intr).reshape(b, h, w, 3)


def intrinsics(h, w, f, b=1, dtype=torch.float64):
    return torch.tensor([[f, f, w / 2.0, h / 2.0]], dtype=dtype).expand(b, 4).clone()


def sphere_depth(h, w, intr, center, radius):
    """Depth map (B, H, W) of a sphere, mask, and analytic normals (B, H, W, 3)."""
    r = rays(h, w, intr)
    c = torch.as_tensor(center, dtype=intr.dtype)
    # |t r - c|^2 = R^2 -> t^2 r.r - 2 t r.c + c.c - R^2 = 0 (near root)
    a = (r * r).sum(-1)
    bq = -2.0 * (r * c).sum(-1)
    cq = (c * c).sum() - radius ** 2
    disc = bq * bq - 4 * a * cq
    mask = disc > 0
    t = (-bq - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    depth = torch.where(mask, t, torch.full_like(t, float(-c[2])))
    n = (depth[..., None] * r - c) / radius
    return depth, mask, n


def plane_depth(h, w, intr, point, normal):
    r = rays(h, w, intr)
    n = torch.as_tensor(normal, dtype=intr.dtype)
    n = n / n.norm()
    p = torch.as_tensor(point, dtype=intr.dtype)
    t = (n * p).sum() / (r * n).sum(-1)
    return t, n


def angular_error_deg(n1, n2):
    cos = (n1 * n2).sum(-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def ellipsoid_depth(h, w, intr, center, axes):
    """Depth (B, H, W) of an axis-aligned ellipsoid (near side) and its hit mask."""
    r = rays(h, w, intr)
    c = torch.as_tensor(center, dtype=intr.dtype)
    ax = torch.as_tensor(axes, dtype=intr.dtype)
    rs, cs = r / ax, c / ax
    a = (rs * rs).sum(-1)
    bq = -2.0 * (rs * cs).sum(-1)
    cq = (cs * cs).sum() - 1.0
    disc = bq * bq - 4 * a * cq
    hit = disc > 0
    t = (-bq - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    return torch.where(hit, t, torch.full_like(t, float(-c[2]))), hit


def face_scene(size=256, dtype=torch.float32, bump_mm=0.5):
    """A face-like synthetic scene: smooth ellipsoid ~150 mm wide at ~500 mm filling the image,
    fine bumps (wrinkle sinusoids + Gaussian bumps, ``bump_mm`` amplitude) in the geometry only,
    an albedo with 3 labelled regions plus an unlabelled darker blob, and a known SH light.

    Returns a dict of (1, ...) tensors: image, depth (with bumps), depth_smooth, normals (true),
    normals_smooth, mask, labels, albedo, light, intrinsics.
    """
    from sfs.normals import depth_to_normals
    from sfs.sh import sh_irradiance

    h = w = size
    f = 0.88 * size * 500.0 / 150.0           # 150 mm at 500 mm spans 88% of the image
    intr = intrinsics(h, w, f, dtype=torch.float64)
    d_s, hit = ellipsoid_depth(h, w, intr, (0.0, 0.0, -560.0), (75.0, 100.0, 60.0))
    n_s = depth_to_normals(d_s, intr, hit)
    mask = hit & (n_s[..., 2] > 0.35)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                            torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    px = 2.0 / size                                   # one pixel in these coordinates
    # forehead wrinkles: horizontal sinusoid, period ~12 px
    forehead = torch.exp(-((yy + 0.45) / 0.18) ** 2) * torch.exp(-(xx / 0.45) ** 2)
    bumps = 1.0 * forehead * torch.sin(2 * math.pi * yy / (12 * px))
    # cheek wrinkles: diagonal, period ~10 px
    for sgn in (-1.0, 1.0):
        cheek = torch.exp(-((xx - 0.45 * sgn) / 0.15) ** 2 - ((yy - 0.2) / 0.25) ** 2)
        bumps = bumps + 0.8 * cheek * torch.sin(2 * math.pi * (xx * sgn + yy) / (10 * px))
    # Gaussian bumps (moles / pores), sigma ~3 px
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        cx_, cy_ = (torch.rand(2, generator=g, dtype=torch.float64) * 1.2 - 0.6).tolist()
        amp = float(torch.rand(1, generator=g)) * 1.5 - 0.75
        bumps = bumps + amp * torch.exp(-((xx - cx_) ** 2 + (yy - cy_) ** 2) / (2 * (3 * px) ** 2))
    bumps = bump_mm * bumps[None]
    depth = d_s - bumps                               # bumps toward the camera are positive
    n_true = depth_to_normals(depth, intr, mask)
    n_smooth = depth_to_normals(d_s, intr, mask)

    labels = torch.where(mask, 0, -1)
    lips = (((xx / 0.25) ** 2 + ((yy - 0.55) / 0.08) ** 2) < 1)[None] & mask
    brows = ((yy - -0.2).abs() < 0.04)[None] & ((xx.abs() - 0.3).abs() < 0.15)[None] & mask
    labels = torch.where(lips, 1, labels)
    labels = torch.where(brows, 2, labels)
    colours = torch.tensor([[0.78, 0.58, 0.48], [0.70, 0.35, 0.35], [0.35, 0.25, 0.20]], dtype=torch.float64)
    albedo = colours[labels.clamp_min(0)] * mask[..., None]
    blob = 1.0 - 0.25 * torch.exp(-((xx + 0.3) ** 2 + (yy - 0.15) ** 2) / (2 * 0.08 ** 2))
    albedo = albedo * blob[None, ..., None]

    light = torch.zeros(1, 9, 3, dtype=torch.float64)
    light[:, 0] = torch.tensor([0.62, 0.60, 0.58]) / (math.pi * 0.282095)
    ldir = torch.nn.functional.normalize(torch.tensor([-0.5, 0.45, 0.75], dtype=torch.float64), dim=0)
    from sfs.sh import sh_basis
    light = light + 0.45 * sh_basis(ldir)[None, :, None]
    image = (albedo * sh_irradiance(n_true, light)).clamp(0, 1) * mask[..., None]
    out = dict(image=image, depth=depth, depth_smooth=d_s, normals=n_true, normals_smooth=n_smooth,
               mask=mask, labels=labels, albedo=albedo, light=light, intrinsics=intr)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in out.items()}


def mean_normal_error(n, n_true, mask):
    return float(angular_error_deg(n.double(), n_true.double())[mask].mean())
