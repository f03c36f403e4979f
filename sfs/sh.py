"""Real spherical harmonics to order 2 and Lambertian SH shading (METHOD.md, eq. 4-5).

Convention used everywhere in the toolkit (renderer included):

    shading(n) = (sh_basis(n) * BAND_FACTORS) @ coeffs          (per colour channel)

* ``sh_basis`` is the *plain* normalised real SH basis (constants of METHOD.md),
  no Lambertian factors.
* The Lambertian band factors (pi, 2pi/3, pi/4 for bands 0/1/2) are applied to the
  **basis** inside :func:`sh_irradiance`, never folded into the coefficients. The
  coefficients therefore describe the incoming radiance; e.g. ``c0 = 1 / (pi * 0.282095)``
  on every channel (all other coefficients zero) gives a uniform shading of exactly 1.

Normals are unit vectors in any frame (camera space in ``sfs``); only their
components matter. Shapes: normals ``(B, ..., 3)``, coefficients ``(B, 9, 3)``
(9 SH functions x RGB), shading ``(B, ..., 3)``. Works for ``(B, N, 3)`` vertex
normals and ``(B, H, W, 3)`` pixel normals alike, on any device.
"""
from __future__ import annotations

import math

import torch

# Normalised real SH constants (METHOD.md).
C00 = 0.282095
C1 = 0.488603
C2_OFF = 1.092548  # xy, yz, xz
C20 = 0.315392     # (3 z^2 - 1)
C22 = 0.546274     # (x^2 - y^2)

#: Lambertian band factors in basis order Y00, Y1-1, Y10, Y11, Y2-2, Y2-1, Y20, Y21, Y22.
BAND_FACTORS = (math.pi,
                2.0 * math.pi / 3.0, 2.0 * math.pi / 3.0, 2.0 * math.pi / 3.0,
                math.pi / 4.0, math.pi / 4.0, math.pi / 4.0, math.pi / 4.0, math.pi / 4.0)

#: Coefficient of Y00 that gives uniform shading 1: 1 / (pi * 0.282095).
UNIFORM_C0 = 1.0 / (math.pi * C00)


def band_factors(device=None, dtype=torch.float32) -> torch.Tensor:
    """(9,) Lambertian band factors as a tensor."""
    return torch.tensor(BAND_FACTORS, device=device, dtype=dtype)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Real SH basis to order 2.

    ``normals`` (..., 3) unit vectors (x, y, z) -> (..., 9) in the order
    Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz), Y20 (3z^2-1), Y21 (xz), Y22 (x^2-y^2).
    """
    x, y, z = normals.unbind(-1)
    return torch.stack([
        torch.full_like(x, C00),
        C1 * y, C1 * z, C1 * x,
        C2_OFF * x * y, C2_OFF * y * z, C20 * (3.0 * z * z - 1.0), C2_OFF * x * z, C22 * (x * x - y * y),
    ], dim=-1)


def lambertian_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 9): ``sh_basis(n) * BAND_FACTORS`` (the design matrix of a light fit)."""
    return sh_basis(normals) * band_factors(normals.device, normals.dtype)


def sh_irradiance(normals: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Lambertian shading S(n) of eq. 5.

    ``normals`` (B, ..., 3) unit, ``coeffs`` (B, 9, 3) -> (B, ..., 3) shading (unitless,
    1 = the uniform light of :data:`UNIFORM_C0`). Band factors are applied to the basis.
    """
    basis = lambertian_basis(normals)
    b = basis.shape[0]
    flat = basis.reshape(b, -1, 9)
    out = torch.bmm(flat, coeffs.to(basis.dtype))
    return out.reshape(*basis.shape[:-1], coeffs.shape[-1])


def default_frontal_light(batch: int = 1, ambient: float = 0.6, frontal: float = 0.4,
                          device=None, dtype=torch.float32) -> torch.Tensor:
    """(B, 9, 3) grey light whose shading is ``ambient + frontal * n_z`` (band 0 and 1 only).

    A surface facing the camera (n = +z in camera space) gets ``ambient + frontal``
    (1.0 by default), a silhouette (n_z = 0) gets ``ambient``.
    """
    c = torch.zeros(batch, 9, 3, device=device, dtype=dtype)
    c[:, 0, :] = ambient / (BAND_FACTORS[0] * C00)
    c[:, 2, :] = frontal / (BAND_FACTORS[2] * C1)
    return c


def render_sh(albedo: torch.Tensor, shading: torch.Tensor, specular: torch.Tensor | None = None,
              eps: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Eq. 4: ``I = albedo * S(n) + eps * beta``.

    ``albedo`` and ``shading`` (B, ..., 3) (albedo may also be (B, 3) per image, broadcast
    over pixels by the caller), ``specular`` beta (B, ..., 1) grey or (B, ..., 3) or None,
    ``eps`` scalar (0: diffuse only). Returns (B, ..., 3) in the image's intensity units.
    """
    out = albedo * shading
    if specular is not None:
        out = out + eps * specular
    return out
