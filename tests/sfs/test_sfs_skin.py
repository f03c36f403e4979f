"""sfs.skin on painted faces: shaded skin stays skin; a red straw, a dark frame, a fringe of hair and eyebrow
hair outside the eyebrow region do not."""
import torch

from sfs.skin import brow_pixels, hair_pixels, non_skin_pixels

SKIN = torch.tensor([0.80, 0.58, 0.47])


def _scene(size: int = 128):
    """(1, S, S, 3) skin under a left-to-right shading ramp with a soft round shadow and a highlight,
    the mask, and the painted straw / frame maps."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    shade = 0.45 + 0.5 * u / size                                               # 0.45 .. 0.95
    shade = shade * (1 - 0.3 * torch.exp(-((u - 40) ** 2 + (v - 90) ** 2) / (2 * 12.0 ** 2)))  # soft shadow
    img = SKIN * shade[..., None]
    spot = torch.exp(-((u - 90) ** 2 + (v - 30) ** 2) / (2 * 4.0 ** 2))[..., None]
    img = img * (1 - spot) + spot * torch.tensor([1.0, 1.0, 1.0])             # white specular highlight
    straw = (u - 64).abs() < 2
    straw &= v > 70
    img[straw] = torch.tensor([0.85, 0.10, 0.12])
    ring = ((u - 40) ** 2 + (v - 40) ** 2).sqrt()
    frame = (ring - 15).abs() < 1.5
    img[frame] = img[frame] * 0.2
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[4:-4, 4:-4] = True
    return img[None].clamp(0, 1), mask[None], straw[None], frame[None]


def test_straw_and_frame_are_found_and_shaded_skin_is_not():
    img, mask, straw, frame = _scene()
    out = non_skin_pixels(img, mask, mask, grow_px=0)
    assert out[straw & mask].float().mean() > 0.95
    assert out[frame & mask].float().mean() > 0.95
    skin = mask & ~straw & ~frame
    # the shading ramp, the soft shadow and the highlight stay skin (away from the painted objects)
    far_from_objects = skin & ~torch.nn.functional.max_pool2d((straw | frame)[:, None].float(), 9, 1, 4)[:, 0].bool()
    assert out[far_from_objects].float().mean() < 0.01


def test_result_is_inside_the_mask_and_grows():
    img, mask, straw, frame = _scene()
    small = mask.clone()
    small[:, :, 64:] = False
    out0 = non_skin_pixels(img, small, small, grow_px=0)
    out3 = non_skin_pixels(img, small, small, grow_px=3)
    assert not (out3 & ~small).any()
    assert out3.sum() > out0.sum() and (out0 <= out3).all()


def test_batched_faces_are_independent():
    img, mask, straw, frame = _scene()
    dark_face = img * 0.3
    both = non_skin_pixels(torch.cat([img, dark_face]), mask.expand(2, -1, -1), mask.expand(2, -1, -1))
    one = non_skin_pixels(img, mask, mask)
    assert torch.equal(both[:1], one)
    assert torch.isfinite(img).all() and both.shape == (2, 128, 128)


def test_hue_exempt_pixels_skip_the_hue_test_only():
    img, mask, straw, frame = _scene()
    exempt = torch.zeros_like(mask)
    exempt[:, 64:] = True                                                       # the lower half: the whole straw
    out = non_skin_pixels(img, mask, mask, grow_px=0, hue_exempt=exempt)
    assert not out[straw & mask & exempt].any()                                 # red, but exempt from the hue test
    assert out[frame & mask].float().mean() > 0.95                              # dark: still found, exempt or not


HAIR = torch.tensor([0.55, 0.45, 0.25])  # light brown: near skin in hue, darker and yellower


def _fringe_scene(size: int = 128, hair_above: bool = True):
    """(1, S, S, 3) a shaded oval face (mask) with a strand-textured fringe over the top of its forehead and,
    above the oval, hair (or, ``hair_above=False``, bare skin: a bald head) ; returns image, mask, fringe."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    mask = ((u - 64) / 44) ** 2 + ((v - 70) / 54) ** 2 < 1.0                   # rows ~16 .. 124
    shade = (0.55 + 0.4 * u / size)[..., None]
    strands = 1.0 + 0.25 * torch.sin(u * 1.3 + 0.2 * v)[..., None]              # hair texture
    img = SKIN * shade
    above = ~mask & (v < 70)
    fringe = mask & (v < 28 + 4 * torch.sin(u / 6.0))
    if hair_above:
        img = torch.where((above | fringe)[..., None], HAIR * shade * strands, img)
    else:
        img = torch.where(above[..., None], SKIN * shade, img)
    return img[None].clamp(0, 1), mask[None], fringe[None]


def test_fringe_coloured_like_the_hair_above_is_hair():
    img, mask, fringe = _fringe_scene()
    skin = mask & ~fringe
    out = hair_pixels(img, mask, skin, band_px=6, grow_px=0)
    assert out[fringe].float().mean() > 0.8
    assert out[skin].float().mean() < 0.02
    assert not (out & ~mask).any()
    # the same fringe is missed by the hue test: that is why this test exists
    assert non_skin_pixels(img, mask, skin, grow_px=0)[fringe].float().mean() < 0.2


def test_no_hair_above_means_no_hair_taken():
    img, mask, fringe = _fringe_scene(hair_above=False)
    assert not hair_pixels(img, mask, mask, band_px=6).any()


def test_hair_batch_is_per_face():
    img, mask, fringe = _fringe_scene()
    bald, _, _ = _fringe_scene(hair_above=False)
    both = hair_pixels(torch.cat([img, bald]), mask.expand(2, -1, -1), (mask & ~fringe).expand(2, -1, -1), band_px=6)
    assert torch.equal(both[:1], hair_pixels(img, mask, mask & ~fringe, band_px=6))
    assert both[0].any() and not both[1].any()


BROW = torch.tensor([0.30, 0.21, 0.16])


def _brow_scene(size: int = 128, brow_colour=BROW):
    """(1, S, S, 3) shaded skin (a ramp and a soft shadow under the brow, like a brow ridge's) with a
    painted eyebrow of which the landmark region covers only the upper half and not the inner head;
    returns image, mask, brow region, the painted brow outside the region, the shadow."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    mask = ((u - 64) / 56) ** 2 + ((v - 64) / 58) ** 2 < 1.0
    shade = 0.6 + 0.35 * u / size
    shadow = 1 - 0.25 * torch.exp(-((v - 52) ** 2) / (2 * 3.0 ** 2)) * ((u > 30) & (u < 100))  # 25 % darker
    img = SKIN * (shade * shadow)[..., None]
    brow = (v >= 36) & (v < 46) & (u >= 30) & (u < 100)
    strands = 1.0 + 0.15 * torch.sin(u * 1.7 + 0.3 * v)
    img = torch.where(brow[..., None], brow_colour * (shade * strands)[..., None], img)
    region = (v >= 36) & (v < 41) & (u >= 36) & (u < 100)                     # upper half, no inner head
    return img[None].clamp(0, 1), mask[None], region[None], (brow & ~region)[None], (shadow < 0.9)[None]


def test_brow_hair_outside_the_region_is_found_and_shaded_skin_is_not():
    img, mask, region, outside, shadow = _brow_scene()
    skin = mask & ~region & ~outside
    out = brow_pixels(img, mask, skin, region, reach_px=6, grow_px=0)
    assert out[outside].float().mean() > 0.8
    assert not (out & shadow & ~outside).any()
    assert not (out & region).any() and not (out & ~mask).any()
    # only pixels within reach of the region
    v = torch.arange(img.shape[1])[None, :, None].expand_as(out)
    assert int(v[out].max()) < 41 + 6 + 1


def test_fair_brows_give_nothing():
    img, mask, region, outside, _ = _brow_scene(brow_colour=SKIN)
    assert not brow_pixels(img, mask, mask & ~region, region).any()


def test_brow_batch_is_per_face():
    img, mask, region, outside, _ = _brow_scene()
    fair, _, _, _, _ = _brow_scene(brow_colour=SKIN)
    skin = mask & ~region
    both = brow_pixels(torch.cat([img, fair]), mask.expand(2, -1, -1), skin.expand(2, -1, -1), region.expand(2, -1, -1))
    assert torch.equal(both[:1], brow_pixels(img, mask, skin, region))
    assert both[0].any() and not both[1].any()


def test_colour_spread_ignores_grey_shading_and_sees_a_coloured_flush():
    """sfs.skin.colour_spread: one skin colour under strong grey shading (a dark-to-bright ramp and a
    grey blob 25 % darker) reads as 0; a smooth red flush of +-0.05 in log red (sfs.refine's colour rule sets
    its scale at 0.02-0.04) reads as about its size; per face in a batch."""
    from sfs.skin import colour_spread

    h = w = 64
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    shade = (0.3 + 0.7 * u / w) * (1 - 0.25 * torch.exp(-((u - 20) ** 2 + (v - 30) ** 2) / 50.0))
    grey = (SKIN * shade[..., None])[None]
    flush = torch.stack([0.05 * torch.sin(u / 9.0), torch.zeros_like(u), torch.zeros_like(u)], -1).exp()
    coloured = (SKIN * flush * shade[..., None])[None]
    mask = torch.ones(1, h, w, dtype=torch.bool)
    spread = colour_spread(torch.cat([grey, coloured]), mask.expand(2, -1, -1))
    assert spread[0] < 1e-4
    assert 0.015 < spread[1] < 0.035  # 0.023: 0.05 sqrt(2/3) x the median |sin - its median| over the cells
    assert torch.equal(colour_spread(coloured, mask), spread[1:])
    # too few skin cells: 0
    assert colour_spread(coloured, mask & ((u < 8) & (v < 8))[None])[0] == 0
