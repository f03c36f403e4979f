import torch

from sfs.normals import depth_to_normals
from sfs_synth import angular_error_deg, intrinsics, plane_depth, sphere_depth


def _erode(mask, r):
    m = mask.float()[:, None]
    k = torch.ones(1, 1, 2 * r + 1, 2 * r + 1, dtype=m.dtype)
    return (torch.nn.functional.conv2d(m, k, padding=r)[:, 0] >= k.numel() - 0.5)


def test_tilted_plane_normals_exact():
    h, w = 64, 80
    intr = intrinsics(h, w, 150.0, dtype=torch.float64)
    depth, n_true = plane_depth(h, w, intr, (0.0, 0.0, -500.0), (0.3, -0.2, 1.0))
    mask = torch.ones(1, h, w, dtype=torch.bool)
    n = depth_to_normals(depth, intr, mask)
    assert n.shape == (1, h, w, 3)
    err = angular_error_deg(n, n_true.expand_as(n))
    assert err.max() < 1e-3   # border one-sided differences are exact on a plane too
    assert (n[..., 2] > 0).all()


def test_sphere_normals_match_analytic():
    h = w = 128
    intr = intrinsics(h, w, 700.0, dtype=torch.float64)
    depth, mask, n_true = sphere_depth(h, w, intr, (5.0, -3.0, -500.0), 40.0)
    n, valid = depth_to_normals(depth, intr, mask, return_valid=True)
    assert valid.sum() == mask.sum()
    inner = _erode(mask, 2) & (n_true[..., 2] > 0.3)
    err = angular_error_deg(n, n_true)
    assert err[inner].max() < 0.5
    assert err[inner].mean() < 0.1
    # pointing toward the camera, unit length, fallback outside the mask
    assert (n[mask][:, 2] > 0).all()
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(1, h, w, dtype=n.dtype))
    assert torch.equal(n[~mask], torch.tensor([0.0, 0.0, 1.0], dtype=n.dtype).expand(int((~mask).sum()), 3))


def test_outside_mask_does_not_leak_and_gradients_flow():
    h = w = 48
    intr = intrinsics(h, w, 300.0, dtype=torch.float64)
    depth, n_true = plane_depth(h, w, intr, (0.0, 0.0, -400.0), (0.0, 0.4, 1.0))
    mask = torch.ones(1, h, w, dtype=torch.bool)
    mask[:, :, 30:] = False
    corrupted = depth.clone()
    corrupted[:, :, 30:] = 50.0  # garbage behind an occluder
    n = depth_to_normals(corrupted, intr, mask)
    err = angular_error_deg(n, n_true.expand_as(n))
    assert err[mask].max() < 1e-3   # column 29 uses a backward difference
    d = depth.clone().float().requires_grad_(True)
    n2 = depth_to_normals(d, intr.float(), mask)
    n2[..., 0].sum().backward()
    assert torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
    assert d.grad[:, :, 31:].abs().sum() == 0


def test_batched_and_isolated_pixels():
    h = w = 16
    intr = intrinsics(h, w, 100.0, b=2, dtype=torch.float32)
    depth = torch.full((2, h, w), 300.0)
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[0] = True
    mask[1, 5, 5] = True  # isolated pixel: no neighbours -> fallback, no NaN
    n, valid = depth_to_normals(depth, intr, mask, return_valid=True)
    assert torch.isfinite(n).all()
    assert valid[0].all() and not valid[1].any()
    # fronto-parallel plane -> (0, 0, 1)
    torch.testing.assert_close(n[0], torch.tensor([0.0, 0.0, 1.0]).expand(h, w, 3))
