import torch

from sfs.light import estimate_sh_light
from sfs.rtv import gaussian_blur, rtv
from sfs.sh import sh_irradiance


def _normals(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(b, h, w, 3, generator=g, dtype=torch.float64)
    n[..., 2] = n[..., 2].abs() + 0.3
    return torch.nn.functional.normalize(n, dim=-1)


def test_light_recovered_exactly_per_pixel_albedo_and_mask():
    b, h, w = 2, 20, 24
    n = _normals(b, h, w)
    g = torch.Generator().manual_seed(1)
    coeffs = torch.randn(b, 9, 3, generator=g, dtype=torch.float64) * 0.3
    coeffs[:, 0] += 1.0
    albedo = 0.2 + 0.6 * torch.rand(b, h, w, 3, generator=g, dtype=torch.float64)
    img = albedo * sh_irradiance(n, coeffs)
    mask = torch.ones(b, h, w, dtype=torch.bool)
    mask[1, :, :10] = False
    img[1, :, :10] = 5.0  # garbage outside the mask must be ignored
    est = estimate_sh_light(img, n, albedo, mask)
    assert est.shape == (b, 9, 3)
    torch.testing.assert_close(est, coeffs, atol=1e-5, rtol=1e-5)


def test_light_per_image_albedo_float32_and_dark_input():
    b, h, w = 1, 16, 16
    n = _normals(b, h, w, 3).float()
    coeffs = torch.zeros(b, 9, 3)
    coeffs[:, 0] = 1.0
    coeffs[:, 3, 0] = 0.4
    alb = torch.tensor([[0.8, 0.5, 0.4]])
    img = alb[:, None, None] * sh_irradiance(n, coeffs)
    torch.testing.assert_close(estimate_sh_light(img, n, alb), coeffs, atol=1e-4, rtol=1e-4)
    zero = estimate_sh_light(torch.zeros_like(img), n, alb)
    assert torch.isfinite(zero).all() and zero.abs().max() == 0
    nomask = estimate_sh_light(img, n, alb, torch.zeros(b, h, w, dtype=torch.bool))
    assert torch.isfinite(nomask).all()


def test_blur_preserves_constant_inside():
    x = torch.ones(1, 2, 30, 30)
    y = gaussian_blur(x, 2.0)
    torch.testing.assert_close(y[..., 10:20, 10:20], torch.ones(1, 2, 10, 10))


def test_rtv_larger_on_fine_texture_than_on_strong_edge():
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    texture = (0.5 + 0.05 * torch.sin(xx * 2.0) * torch.sin(yy * 1.7)).float()[None, ..., None]
    edge = (xx >= w // 2).float()[None, ..., None] * 0.8 + 0.1
    flat = torch.full_like(edge, 0.4)
    r_tex, r_edge, r_flat = (rtv(t, sigma=2.0, eps=1e-2).mean() for t in (texture, edge, flat))
    assert r_tex > 5 * r_edge
    assert r_flat < 1e-6
    # differentiable
    t = texture.clone().requires_grad_(True)
    rtv(t).pow(2).mean().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_rtv_mask_ignores_outside_pixels():
    x = torch.full((1, 32, 32, 1), 0.5)
    x[:, :, 20:] = torch.rand(1, 32, 12, 1)   # noisy region outside the mask
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :, :20] = True
    assert rtv(x, mask=mask)[:, :, :12].abs().max() < 1e-6
