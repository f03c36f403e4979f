"""SH light by linear least squares (METHOD.md fine stage, step 1)."""
from __future__ import annotations

import torch

from .sh import lambertian_basis


def estimate_sh_light(image: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor,
                      mask: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                      ridge: float = 1e-9) -> torch.Tensor:
    """Fit the (B, 9, 3) SH coefficients of ``image = albedo * sh_irradiance(normals, r)``.

    With albedo fixed (and no specular, eps = 0) eq. 4 is linear in r; each colour
    channel is an independent 9-unknown least-squares problem over the masked pixels,
    solved by the normal equations (in float64) with a tiny relative ridge
    ``ridge * trace(A^T A) / 9`` so that an all-dark, fully masked or degenerate
    input returns finite coefficients (zeros when there is no data).

    Args:
        image: (B, H, W, 3) intensities in [0, 1] (any units: r scales with them).
        normals: (B, H, W, 3) unit normals (camera space).
        albedo: (B, H, W, 3) per pixel or (B, 3) per image.
        mask: (B, H, W) bool, pixels to use (None: all).
        weights: optional (B, H, W) non-negative per-pixel weights (e.g. 0 on saturated pixels).
        ridge: relative Tikhonov factor.

    Returns:
        (B, 9, 3) coefficients, band factors NOT folded in (see ``sfs.sh``).
    """
    b, h, w, _ = image.shape
    dtype = image.dtype
    if albedo.dim() == 2:
        albedo = albedo[:, None, None, :].expand(b, h, w, 3)
    wgt = torch.ones(b, h, w, device=image.device, dtype=torch.float64)
    if mask is not None:
        wgt = wgt * mask.to(torch.float64)
    if weights is not None:
        wgt = wgt * weights.to(torch.float64)
    basis = lambertian_basis(normals.to(torch.float64)).reshape(b, h * w, 1, 9)
    a = basis * albedo.to(torch.float64).reshape(b, h * w, 3, 1)      # (B, P, 3, 9)
    y = image.to(torch.float64).reshape(b, h * w, 3)
    wf = wgt.reshape(b, h * w, 1, 1)
    ata = torch.einsum("bpci,bpcj->bcij", a * wf, a)                  # (B, 3, 9, 9)
    aty = torch.einsum("bpci,bpc->bci", a * wf, y)                    # (B, 3, 9)
    tr = ata.diagonal(dim1=-2, dim2=-1).sum(-1)                       # (B, 3)
    lam = ridge * tr / 9.0 + 1e-12
    eye = torch.eye(9, device=image.device, dtype=torch.float64)
    sol = torch.linalg.solve(ata + lam[..., None, None] * eye, aty[..., None])[..., 0]   # (B, 3, 9)
    return sol.transpose(1, 2).to(dtype)
