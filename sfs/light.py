"""SH light by linear least squares (METHOD.md fine stage, step 1)."""
from __future__ import annotations

import torch

from .sh import lambertian_basis, sh_basis


def estimate_sh_light(image: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor,
                      mask: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                      ridge: float = 1e-9, one_light_prior: float = 0.0,
                      one_light_target: torch.Tensor | None = None) -> torch.Tensor:
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
        one_light_prior: relative weight (like ``ridge``) of a pull toward the closest light made of an
            ambient term and one distant light (:func:`one_light_fit`). Over a face, whose normals mostly
            face the camera, the constant, the z term and the 3z^2 - 1 term are nearly collinear and the
            plain fit trades them freely on a slightly wrong normal map; the pull fixes that subspace and
            leaves the well-determined directions to the data. 0: off.
        one_light_target: optional (B, 9, 3) light to pull toward instead of the one found here, e.g. found once
            (no gradient) on a start shape for every evaluation of an energy that re-fits the light: the
            target's own fit is a dozen small operations, about a tenth of the fine stage's time when
            repeated at every evaluation.

    Returns:
        (B, 9, 3) coefficients, band factors NOT folded in (see ``sfs.sh``).
    """
    ata, aty = _normal_equations(image, normals, albedo, mask, weights)
    tr = ata.diagonal(dim1=-2, dim2=-1).sum(-1)                       # (B, 3)
    lam = ridge * tr / 9.0 + 1e-12
    if one_light_prior <= 0:
        return _solve(ata, aty, lam).transpose(1, 2).to(image.dtype)
    pull = one_light_prior * tr / 9.0
    if one_light_target is None:
        target = _pulled_one_light(ata, aty, lam, pull)
    else:
        target = one_light_target.to(ata).transpose(1, 2)
    return _solve(ata, aty, lam, pull, target).transpose(1, 2).to(image.dtype)


def _normal_equations(image, normals, albedo, mask, weights):
    """Per channel the weighted normal equations of the light fit: ``ata`` (B, 3, 9, 9), ``aty`` (B, 3, 9),
    float64."""
    b, h, w, _ = image.shape
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
    return ata, aty


def _solve(ata, aty, lam, pull=None, target=None):
    """(B, 3, 9): the ridge-regularised solve, pulled toward ``target`` (B, 3, 9) with weight ``pull`` (B, 3)."""
    eye = torch.eye(9, device=ata.device, dtype=ata.dtype)
    if pull is None:
        return torch.linalg.solve(ata + lam[..., None, None] * eye, aty[..., None])[..., 0]
    return torch.linalg.solve(ata + (lam + pull)[..., None, None] * eye,
                              (aty + pull[..., None] * target)[..., None])[..., 0]


def _pulled_one_light(ata, aty, lam, pull):
    """(B, 3, 9) the ambient + one light pulled toward: its direction from the order-1 terms, first of the
    four-term fit, then once more of the fit pulled toward that (the four-term fit leans toward the order-2
    part that a face's normals mix into the linear terms)."""
    first = one_light_fit(ata, aty)
    return one_light_fit(ata, aty, _solve(ata, aty, lam, pull, first))


def one_light_target(image: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor,
                     mask: torch.Tensor | None = None, ridge: float = 1e-9,
                     one_light_prior: float = 0.01) -> torch.Tensor:
    """(B, 9, 3), no gradient: the ambient + one distant light that :func:`estimate_sh_light`'s
    ``one_light_prior`` pulls toward on these inputs (as ``one_light_target``)."""
    with torch.no_grad():
        ata, aty = _normal_equations(image, normals, albedo, mask, None)
        tr = ata.diagonal(dim1=-2, dim2=-1).sum(-1)
        target = _pulled_one_light(ata, aty, ridge * tr / 9.0 + 1e-12, one_light_prior * tr / 9.0)
        return target.transpose(1, 2).to(image.dtype)


def one_light_fit(ata: torch.Tensor, aty: torch.Tensor, guess: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, 9) per channel the least-squares light of the form ``a e_0 + k Y(l)``: an ambient term plus
    one distant light from the unit direction l (its radiance projected on the SH basis, as
    :func:`sfs.sh.sh_basis` at l), given the per-channel normal equations ``ata`` (B, 3, 9, 9) and ``aty``
    (B, 3, 9) of the full fit. l is the channels' mean direction of the linear terms of ``guess`` (B, 3, 9),
    by default of the order-0-1 fit (that four-term fit is well conditioned: a face's normals span the
    linear functions)."""
    if guess is None:
        four = ata[..., :4, :4]
        scale = four.diagonal(dim1=-2, dim2=-1).sum(-1) / 4.0
        eye4 = torch.eye(4, device=ata.device, dtype=ata.dtype)
        guess = torch.linalg.solve(four + (1e-9 * scale + 1e-12)[..., None, None] * eye4,
                                   aty[..., :4, None])[..., 0]              # (B, 3, 4): Y00, Y1-1 (y), Y10 (z), Y11 (x)
    yzx = guess[..., 1:4].mean(1)                                            # (B, 3)
    direction = torch.stack([yzx[:, 2], yzx[:, 0], yzx[:, 1]], -1)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ambient = direction.new_zeros(direction.shape[0], 9)
    ambient[:, 0] = 1.0
    cols = torch.stack([ambient, sh_basis(direction)], -1)                  # (B, 9, 2)
    a2 = torch.einsum("bik,bcij,bjl->bckl", cols, ata, cols)                 # (B, 3, 2, 2)
    y2 = torch.einsum("bik,bci->bck", cols, aty)                             # (B, 3, 2)
    eps = 1e-12 * a2.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-12
    weights = torch.linalg.solve(a2 + eps[..., None, None] * torch.eye(2, device=ata.device, dtype=ata.dtype),
                                 y2[..., None])[..., 0]                      # (B, 3, 2)
    return torch.einsum("bik,bck->bci", cols, weights)
