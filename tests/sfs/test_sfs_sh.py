import math

import torch

from sfs.sh import (UNIFORM_C0, default_frontal_light, render_sh, sh_basis, sh_irradiance)


def test_basis_values_and_order():
    n = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = sh_basis(n)
    assert y.shape == (3, 9)
    # +z: Y00, Y10 = 0.488603, Y20 = 0.315392 * 2
    torch.testing.assert_close(y[0], torch.tensor([0.282095, 0, 0.488603, 0, 0, 0, 0.630784, 0, 0]))
    # +x: Y11 and Y22 positive, Y20 = -0.315392
    torch.testing.assert_close(y[1], torch.tensor([0.282095, 0, 0, 0.488603, 0, 0, -0.315392, 0, 0.546274]))
    # +y: Y1-1, Y22 negative
    torch.testing.assert_close(y[2], torch.tensor([0.282095, 0.488603, 0, 0, 0, 0, -0.315392, 0, -0.546274]))
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 3.0]]), dim=-1)[0]
    x, yy, z = d.tolist()
    v = sh_basis(d)
    torch.testing.assert_close(v[4], torch.tensor(1.092548 * x * yy))
    torch.testing.assert_close(v[5], torch.tensor(1.092548 * yy * z))
    torch.testing.assert_close(v[7], torch.tensor(1.092548 * x * z))


def test_uniform_light_gives_shading_one_on_pixels_and_vertices():
    c = torch.zeros(2, 9, 3)
    c[:, 0] = UNIFORM_C0
    assert math.isclose(UNIFORM_C0, 1 / (math.pi * 0.282095))
    pix = torch.nn.functional.normalize(torch.randn(2, 5, 7, 3), dim=-1)
    verts = torch.nn.functional.normalize(torch.randn(2, 11, 3), dim=-1)
    torch.testing.assert_close(sh_irradiance(pix, c), torch.ones(2, 5, 7, 3))
    torch.testing.assert_close(sh_irradiance(verts, c), torch.ones(2, 11, 3))


def test_band_factors_applied_to_basis_and_batch_independent():
    n = torch.nn.functional.normalize(torch.randn(2, 13, 3), dim=-1)
    c = torch.randn(2, 9, 3)
    s = sh_irradiance(n, c)
    f = torch.tensor([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)
    ref = torch.einsum("bnk,k,bkc->bnc", sh_basis(n), f, c)
    torch.testing.assert_close(s, ref)
    # batch element 1 must not depend on coefficients of element 0
    c2 = c.clone(); c2[0] += 1
    torch.testing.assert_close(sh_irradiance(n, c2)[1], s[1])


def test_frontal_light_and_clamped_cosine_approximation():
    c = default_frontal_light(1, ambient=0.6, frontal=0.4)
    n = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]])
    s = sh_irradiance(n, c)[0, :, 0]
    torch.testing.assert_close(s, torch.tensor([1.0, 0.6, 0.2]))
    # a light made of the SH projection of a clamped cosine (a distant directional light)
    # approximates max(n.l, 0) to within ~10% of its peak (known order-2 accuracy)
    l = torch.nn.functional.normalize(torch.tensor([0.3, 0.5, 0.8]), dim=0)
    cl = torch.zeros(1, 9, 3)
    yl = sh_basis(l)
    cl[0] = yl[:, None]  # SH projection of a unit directional (delta) radiance; Lambertian factors in sh_irradiance
    nn_ = torch.nn.functional.normalize(torch.randn(1, 500, 3), dim=-1)
    ref = (nn_ @ l).clamp_min(0)
    err = (sh_irradiance(nn_, cl)[0, :, 0] - ref).abs().max()
    assert err < 0.1


def test_render_specular_term():
    a = torch.full((1, 2, 2, 3), 0.5)
    s = torch.full((1, 2, 2, 3), 0.8)
    beta = torch.full((1, 2, 2, 1), 0.1)
    torch.testing.assert_close(render_sh(a, s), a * s)
    torch.testing.assert_close(render_sh(a, s, beta, 1.0), a * s + 0.1)
