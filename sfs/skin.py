"""Pixels of the face mask that are not skin (glasses frames, a straw, hair strands), by colour alone.

Shape from shading reads every intensity change as a change of the surface
normal; on a glasses frame or a straw that turns the object's outline into
a groove or ridge of the face. These pixels are found from the image: their
hue is far from the face's skin hue, or they are much darker
than their surroundings (a thin dark frame, not a shadowed fold, whose
shading falls off gently) (:func:`non_skin_pixels`); or, for a fringe over
the forehead, they have the colour of the hair just above the mask
(:func:`hair_pixels`); or, beside the eyebrow region, they have the colour of the
eyebrow hair (:func:`brow_pixels`).

Batched torch on image-space tensors, like the rest of :mod:`sfs`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rtv import masked_gaussian_blur

_EPS = 1e-3  # [0, 1] intensity added before logarithms: keeps black pixels finite


def _robust_centre_scale(x: torch.Tensor, w: torch.Tensor, floor: float = 1e-3):
    """Per-image median and MAD-based sigma (at least ``floor``) of (B, P, C) values over (B, P) bool ``w``."""
    b, _, c = x.shape
    med = torch.zeros(b, c, dtype=x.dtype, device=x.device)
    sig = torch.ones(b, c, dtype=x.dtype, device=x.device)
    for i in range(b):  # per image: the selected pixel counts differ
        v = x[i][w[i]]
        if v.shape[0] < 16:
            continue
        m = v.median(0).values
        med[i] = m
        sig[i] = 1.4826 * (v - m).abs().median(0).values.clamp_min(floor)
    return med, sig


def _log_chroma(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) positive colours -> (B, H, W, 2) log-chromaticity ``(log r/g, log b/g)``."""
    return torch.stack([torch.log(x[..., 0] / x[..., 1]), torch.log(x[..., 2] / x[..., 1])], -1)


def _grow(out: torch.Tensor, px: int) -> torch.Tensor:
    """(B, H, W) bool dilated by a (2 px + 1) square."""
    if px <= 0:
        return out
    return F.max_pool2d(out[:, None].float(), 2 * px + 1, 1, px)[:, 0] > 0.5


def non_skin_pixels(image: torch.Tensor, mask: torch.Tensor, skin: torch.Tensor, chroma_sigmas: float = 15.0,
                    dark_ratio: float = 0.3, local_px: float = 6.0, grow_px: int = 3,
                    hue_exempt: torch.Tensor | None = None, hue_sigma_floor: float = 0.03) -> torch.Tensor:
    """(B, H, W) bool: pixels of ``mask`` whose colour says they are not skin.

    Args:
        image: (B, H, W, 3) float in [0, 1].
        mask: (B, H, W) bool, the pixels to classify (e.g. the SfS mask).
        skin: (B, H, W) bool, pixels that are mostly skin (e.g. the landmark skin
            region); their robust colour statistics define "skin".
        chroma_sigmas: a pixel whose log-chromaticity ``(log r/g, log b/g)`` lies
            more than this many robust sigmas (1.4826 MAD) off the skin's, measured
            across the grey-to-skin line (a change of hue, not of saturation), is not
            skin (unitless). Tested only where the pixel is no brighter than its
            surroundings (not a highlight) and at least half the skin's median
            intensity (dark chromaticity is noise).
        dark_ratio: a pixel darker than this fraction of its neighbourhood's mean
            intensity (Gaussian of ``local_px`` px over ``mask``) is not skin (unitless).
        local_px: px, the neighbourhood of ``dark_ratio``.
        hue_exempt: optional (B, H, W) bool, pixels left out of the hue test (lips have
            a hue of their own; the nose ridge's highlight flanks take the light's); the
            darkness test still applies there.
        hue_sigma_floor: the hue sigma is at least this (log-chromaticity units): on
            clean or very even skin the MAD is tiny and rosy cheeks would count.
        grow_px: px, the result is dilated by this: outlines are blurred in the photo, and the
            pixels beside a fixed one still carve its edge (measured on a glasses frame: 1 px
            left an outline, 3 px did not).

    Returns the (B, H, W) bool map, always inside ``mask``.
    """
    mask = mask.bool()
    x = image.clamp(0.0, 1.0) + _EPS
    chroma = _log_chroma(x)                                                      # (B, H, W, 2)
    b, h, w = mask.shape
    # Shadows saturate skin and highlights wash it toward grey: both move the chromaticity
    # along the line from grey (0, 0) through the skin colour. Only the offset across that
    # line (a different hue: a red straw, a blue frame, grey hair) says "not skin".
    sel = (skin.bool() & mask).reshape(b, -1)
    med, _ = _robust_centre_scale(chroma.reshape(b, -1, 2), sel)
    along = med / med.norm(dim=-1, keepdim=True).clamp_min(1e-6)                # (B, 2)
    across = torch.stack([-along[:, 1], along[:, 0]], -1)
    hue = (chroma * across[:, None, None]).sum(-1, keepdim=True)                 # (B, H, W, 1)
    hmed, hsig = _robust_centre_scale(hue.reshape(b, -1, 1), sel, hue_sigma_floor)
    far = ((hue - hmed[:, None, None]).abs() / hsig[:, None, None] > chroma_sigmas)[..., 0]

    lum = x.mean(-1)                                                             # (B, H, W)
    local = masked_gaussian_blur(lum[..., None], mask, local_px)[..., 0]
    dark = lum < dark_ratio * local
    # Specular highlights take the light's hue: a hue change only counts where the
    # pixel is not brighter than its surroundings (frames, straws, hair are not).
    far &= lum <= local
    # Chromaticity of dark pixels is noise (and JPEG's subsampled colour): no hue test there.
    lum_skin, _ = _robust_centre_scale(lum.reshape(b, -1, 1), sel)
    far &= (lum >= 0.5 * lum_skin[:, :, None]) & (lum >= 0.08)
    if hue_exempt is not None:
        far &= ~hue_exempt.bool()

    return _grow((far | dark) & mask, grow_px) & mask


def hair_pixels(image: torch.Tensor, mask: torch.Tensor, skin: torch.Tensor, band_px: int = 10,
                upper_fraction: float = 0.25, separation: float = 4.0, margin: float = 3.0,
                grow_px: int = 2) -> torch.Tensor:
    """(B, H, W) bool: pixels in the upper part of ``mask`` that have the colour of the hair just above it.

    A fringe over the forehead has, close up, almost the hue of skin, so the hue test of
    :func:`non_skin_pixels` misses it, and shape from shading carves its strands into ripples. But
    hair over the forehead is mostly the same hair as just above the mask. So: take the colour of
    a band of ``band_px`` px right above the mask's upper edge (per image column), compare it with
    the skin's; where they differ (by more than ``separation`` robust skin sigmas: there is hair,
    not forehead or bald scalp, above the edge), a mask pixel in the top ``upper_fraction`` of the
    mask's height whose colour is nearer the band's than the skin's (each in its own robust sigmas)
    and more than ``margin`` skin sigmas off the skin is hair. Colour = (log r/g, log b/g, log
    intensity): hair differs from skin as much in brightness as in hue.

    Args:
        image: (B, H, W, 3) float in [0, 1]; mask: (B, H, W) bool; skin: (B, H, W) bool, pixels
            that are mostly skin (their colour statistics define "skin").
        band_px, grow_px: px; the result is cleaned by a 3x3 opening (speckle) and dilated by
            ``grow_px`` (strand edges are blurred). Other arguments are unitless.

    Returns the (B, H, W) bool map, always inside ``mask``; all False for an image whose band
    looks like its skin.
    """
    mask = mask.bool()
    b, h, w = mask.shape
    colour = _hair_colour(image)                                                   # (B, H, W, 3)
    rows = torch.arange(h, device=mask.device)[None, :, None]                     # (1, H, 1)
    has = mask.any(1)                                                              # (B, W)
    first = mask.to(torch.uint8).argmax(1)                                         # (B, W): top edge per column
    band = has[:, None, :] & (rows < first[:, None, :]) & (rows >= first[:, None, :] - band_px)
    in_row = mask.any(2).to(torch.uint8)                                           # (B, H)
    top, bottom = in_row.argmax(1), h - 1 - in_row.flip(1).argmax(1)               # first and last mask rows
    upper = rows < (top + upper_fraction * (bottom - top))[:, None, None]

    ms, ss = _colour_centre_scale(colour, skin.bool() & mask)
    mh, sh = _colour_centre_scale(colour, band)
    distinct = (band.flatten(1).sum(1) >= 16) & (((mh - ms) / ss).norm(dim=-1) > separation)  # (B,)
    d_skin = _sigma_distance(colour, ms, ss)
    like_hair = (_sigma_distance(colour, mh, sh) < d_skin) & (d_skin > margin)
    out = mask & upper & like_hair & distinct[:, None, None]
    return _grow(_opening(out), grow_px) & mask


def _hair_colour(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) in [0, 1] -> (B, H, W, 3) ``(log r/g, log b/g, log intensity)``: hair differs
    from skin as much in brightness as in hue."""
    x = image.clamp(0.0, 1.0) + _EPS
    return torch.cat([_log_chroma(x), torch.log(x.mean(-1, keepdim=True))], -1)


# Robust sigmas of _hair_colour are at least these (log r/g, log b/g, log intensity): on very even
# skin the MAD is tiny and every pixel would be "far" from it.
_COLOUR_SIGMA_FLOOR = (0.02, 0.02, 0.05)


def _colour_centre_scale(colour: torch.Tensor, select: torch.Tensor):
    """Per-image robust centre and sigma (floored) of (B, H, W, 3) ``colour`` over (B, H, W) bool ``select``:
    two (B, 3) tensors."""
    b = colour.shape[0]
    centre, scale = _robust_centre_scale(colour.reshape(b, -1, 3), select.reshape(b, -1))
    return centre, torch.maximum(scale, torch.tensor(_COLOUR_SIGMA_FLOOR, dtype=colour.dtype, device=colour.device))


def _sigma_distance(colour: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, H, W) distance of each pixel's colour from ``centre`` (B, 3), in units of ``scale`` (B, 3)."""
    return ((colour - centre[:, None, None]) / scale[:, None, None]).norm(dim=-1)


def _opening(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool after a 3x3 opening (erode, then dilate): isolated speckle removed."""
    return _grow(~_grow(~x, 1), 1)


def brow_pixels(image: torch.Tensor, mask: torch.Tensor, skin: torch.Tensor, brows: torch.Tensor,
                reach_px: int = 6, margin: float = 3.0, grow_px: int = 1) -> torch.Tensor:
    """(B, H, W) bool: pixels just outside the eyebrow region that have the eyebrow hair's colour.

    The eyebrow region drawn from the landmark mesh is thin and ends early: the inner heads and
    the edges of real (and painted) eyebrows often lie outside it, on "skin", where shape from
    shading carves the brow hair's colour into dents and ridges. The hair's colour is that of the
    region's pixels more than ``margin`` robust skin sigmas off the skin (the region also holds
    skin); a pixel of ``mask`` within ``reach_px`` px of the region whose colour
    (:func:`_hair_colour`) is nearer the hair's than the skin's (each in its own robust sigmas) and
    more than ``margin`` skin sigmas off the skin is eyebrow too. Fair brows with fewer than 16
    such pixels: nothing.

    Args:
        image: (B, H, W, 3) float in [0, 1]; mask: (B, H, W) bool; skin, brows: (B, H, W) bool,
            the landmark skin and eyebrow regions.
        reach_px, grow_px: px; the result is cleaned by a 3x3 opening (speckle) and dilated by
            ``grow_px`` (hair edges are blurred). ``margin`` is unitless.

    Returns the (B, H, W) bool map, always inside ``mask`` and outside ``brows``.
    """
    mask, brows = mask.bool(), brows.bool()
    colour = _hair_colour(image)
    ms, ss = _colour_centre_scale(colour, skin.bool() & mask)
    d_skin = _sigma_distance(colour, ms, ss)
    off_skin = d_skin > margin
    hair = brows & mask & off_skin
    mh, sh = _colour_centre_scale(colour, hair)
    found = hair.flatten(1).sum(1) >= 16                                           # (B,)
    near = (_sigma_distance(colour, mh, sh) < d_skin) & off_skin
    cand = mask & ~brows & _grow(brows, reach_px) & near & found[:, None, None]
    # the hair joins the candidates for the opening, so that a pixel touching it is not eroded
    # away for lack of candidate neighbours; only the candidates are kept and grown
    out = _opening(cand | hair) & cand
    return _grow(out, grow_px) & mask & ~brows


def colour_spread(image: torch.Tensor, skin: torch.Tensor, cell_px: int = 4) -> torch.Tensor:
    """(B,) how much the skin's colour varies over the face at a coarse scale: the median over ``cell_px``
    square cells that ``skin`` fills of the distance of the cell's mean log colour, with its grey part removed
    (``log I - mean_c log I``: a white light's shading scales all channels alike and drops out), to the
    median cell's (unitless, log ratio; 0.05 is about 5 % of redness). 0 for an image with fewer than 8 such
    cells.

    ``image`` (B, H, W, 3) in [0, 1]; ``skin`` (B, H, W) bool, the pixels to read (e.g. the largest
    albedo region's usable pixels). A coloured albedo (a flush, freckles, a tan line) or coloured light
    shows here; a grey albedo change does not."""
    log = image.clamp_min(_EPS).log()
    chroma = (log - log.mean(-1, keepdim=True)).permute(0, 3, 1, 2)          # (B, 3, H, W)
    w = skin.to(image.dtype)[:, None]
    cover = F.avg_pool2d(w, cell_px)                                         # (B, 1, h, w) share of skin
    cell_mean = F.avg_pool2d(chroma * w, cell_px) / cover.clamp_min(1e-6)
    full = cover[:, 0] > 0.999                                               # (B, h, w)
    out = torch.zeros(image.shape[0], dtype=image.dtype, device=image.device)
    for i in range(image.shape[0]):  # per image: the filled cell counts differ
        v = cell_mean[i][:, full[i]].T                                       # (N, 3)
        if v.shape[0] >= 8:
            out[i] = (v - v.median(0).values).norm(dim=1).median()
    return out
