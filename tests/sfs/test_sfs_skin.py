"""sfs.skin on painted faces: shaded skin stays skin; a red straw, a dark frame and a fringe of hair do not."""
import torch

from sfs.skin import hair_pixels, non_skin_pixels

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
