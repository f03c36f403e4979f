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


def _normals_by_crossing_point_differences(depth, intrinsics, mask):
    """The definition the closed form of sfs.normals rests on: back-project every pixel, difference the
    3-D points (central where both neighbours are in the mask, one-sided where one is), cross v with u."""
    from sfs.projection import depth_map_to_points
    p = depth_map_to_points(depth, intrinsics)

    def diff(axis):
        m = mask
        nxt = torch.zeros_like(m)
        prv = torch.zeros_like(m)
        p_next = torch.zeros_like(p)
        p_prev = torch.zeros_like(p)
        if axis == 2:
            nxt[:, :, :-1], prv[:, :, 1:] = m[:, :, 1:], m[:, :, :-1]
            p_next[:, :, :-1], p_prev[:, :, 1:] = p[:, :, 1:], p[:, :, :-1]
        else:
            nxt[:, :-1], prv[:, 1:] = m[:, 1:], m[:, :-1]
            p_next[:, :-1], p_prev[:, 1:] = p[:, 1:], p[:, :-1]
        nxt, prv = (nxt & m)[..., None], (prv & m)[..., None]
        return torch.where(nxt & prv, 0.5 * (p_next - p_prev),
                           torch.where(nxt, p_next - p, torch.where(prv, p - p_prev, torch.zeros_like(p))))

    n = torch.linalg.cross(diff(1), diff(2), dim=-1)
    valid = mask & (n.norm(dim=-1) > 0)
    n = torch.nn.functional.normalize(n, dim=-1)
    return torch.where(valid[..., None], n, torch.tensor([0.0, 0.0, 1.0], dtype=depth.dtype)), valid


def test_the_closed_form_equals_crossing_the_point_differences():
    """depth_to_normals works on depth differences only; on random depth, a ragged mask (holes, one-pixel
    islands and lines) and three different cameras it gives the normals of the 3-D point differences."""
    g = torch.Generator().manual_seed(3)
    b, h, w = 3, 37, 53
    mask = torch.rand(b, h, w, generator=g) > 0.2
    depth = (400 + 80 * torch.rand(b, h, w, generator=g)).double()
    k = torch.tensor([[300.0, 320.0, 20.0, 15.0], [500, 480, 30, 10], [200, 210, 26, 19]], dtype=torch.float64)
    want, want_valid = _normals_by_crossing_point_differences(depth, k, mask)
    got, valid = depth_to_normals(depth, k, mask, return_valid=True)
    assert torch.equal(valid, want_valid) and 0 < int((~valid & mask).sum())  # some mask pixels lack a neighbour
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
