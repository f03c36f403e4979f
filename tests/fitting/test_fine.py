"""fitting.fine: which SfS pixels keep the medium depth (fixed_depth_pixels), on a painted face;
which pixels give the texture its colour (texture_source_mask)."""
import torch

from fitting.fine import FineStageSettings, fixed_depth_pixels, texture_source_mask
from landmarks import REGION_NAMES

SKIN = torch.tensor([0.80, 0.58, 0.47])
BROW = torch.tensor([0.30, 0.21, 0.16])


def _face(size: int = 96):
    """(1, S, S, 3) shaded skin with a painted eyebrow whose landmark region covers only its upper half;
    returns image, mask, region labels (-1 outside), the painted brow below the region."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    img = SKIN * (0.6 + 0.35 * u / size)[..., None]
    brow = (v >= 30) & (v < 40) & (u >= 20) & (u < 76)
    img = torch.where(brow[..., None], BROW * (1.0 + 0.15 * torch.sin(u * 1.7))[..., None], img)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[6:-6, 6:-6] = True
    labels = torch.full((size, size), REGION_NAMES.index("skin"))
    region = (v >= 30) & (v < 35) & (u >= 20) & (u < 76)
    labels[region] = REGION_NAMES.index("brows")
    labels[~mask] = -1
    return img[None], mask[None], labels[None], (brow & ~region)[None]


def test_brow_hair_below_the_region_keeps_the_medium_depth_unless_switched_off():
    img, mask, labels, below = _face()
    brows = labels == REGION_NAMES.index("brows")
    on = fixed_depth_pixels(img, mask, labels, FineStageSettings())
    off = fixed_depth_pixels(img, mask, labels, FineStageSettings(brow_reach_px=None))
    assert on[brows].all() and off[brows].all()          # the region itself always
    assert on[below].float().mean() > 0.8
    assert off[below].float().mean() < 0.2
    assert not (on & ~mask).any()


def test_texture_leaves_out_the_outer_edge_but_not_the_eyes_edge():
    size, edge = 64, 4
    labels = torch.full((1, size, size), REGION_NAMES.index("background"))
    labels[:, 8:56, 8:56] = REGION_NAMES.index("skin")
    labels[:, 20:26, 16:30] = REGION_NAMES.index("eyes")
    mask = labels == REGION_NAMES.index("skin")  # the SfS mask has the eye as a hole
    source = texture_source_mask(mask, labels, edge)
    assert not (source & ~mask).any()
    assert not source[:, 8:8 + edge].any() and not source[:, :, 56 - edge:56].any()  # outer band out
    assert source[:, 8 + edge:56 - edge, 8 + edge:56 - edge][mask[:, 8 + edge:56 - edge, 8 + edge:56 - edge]].all()
    assert source[:, 19, 16:30].all() and source[:, 26, 16:30].all()  # right above and below the eye: kept
    assert torch.equal(texture_source_mask(mask, labels, 0), mask)
