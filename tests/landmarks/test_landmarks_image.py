"""load_image / to_uint8: dtypes, channel layouts, EXIF orientation, bad files."""
from __future__ import annotations


import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from landmarks.errors import ImageLoadError
from landmarks.image import LoadedImage, _apply_orientation, load_image, to_uint8
from shared_photos import FACES

HOPPER = FACES / "02_grace_hopper_older_glasses.jpg"


def _rand_rgb(h=23, w=37, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_convention(img: LoadedImage, h: int, w: int):
    assert img.pixels.shape == (h, w, 3)
    assert img.pixels.dtype == np.float32
    assert img.pixels.min() >= 0.0 and img.pixels.max() <= 1.0


def test_load_jpeg_file_matches_pillow():
    img = load_image(HOPPER)
    ref = np.asarray(Image.open(HOPPER).convert("RGB"))
    _check_convention(img, *ref.shape[:2])
    assert img.name == HOPPER.name and img.path == HOPPER
    np.testing.assert_array_equal(to_uint8(img.pixels), ref)


def test_uint8_uint16_float_arrays_agree():
    rgb8 = _rand_rgb()
    a = load_image(rgb8).pixels
    b = load_image(rgb8.astype(np.uint16) * 257).pixels      # 257 * 255 = 65535
    c = load_image(rgb8.astype(np.float64) / 255.0).pixels
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    np.testing.assert_array_equal(to_uint8(a), rgb8)


def test_float_input_is_clipped():
    arr = np.linspace(-1.0, 2.0, 5 * 7 * 3).reshape(5, 7, 3)  # slightly out of [0, 1]: clipped
    out = load_image(arr).pixels
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, np.clip(arr, 0, 1), atol=1e-6)


@pytest.mark.parametrize("shape", [(11, 13), (11, 13, 1)])
def test_grey_is_replicated(shape):
    grey = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = load_image(grey).pixels
    _check_convention(out_img := LoadedImage(out, "x"), 11, 13)
    assert out_img.size == (11, 13)
    flat = grey.reshape(11, 13) / 255.0
    for ch in range(3):
        np.testing.assert_allclose(out[..., ch], flat, atol=1e-6)


def test_rgba_composited_over_white():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255          # pure red...
    rgba[0, :, 3] = 255         # ...opaque in row 0
    rgba[1, :, 3] = 0           # transparent in row 1 -> white
    out = load_image(rgba).pixels
    np.testing.assert_allclose(out[0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[1, 0], [1, 1, 1], atol=1e-6)


def test_16bit_png_keeps_full_depth(tmp_path):
    rng = np.random.default_rng(2)
    rgb16 = rng.integers(0, 65536, (9, 10, 3), dtype=np.uint16)
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), np.ascontiguousarray(rgb16[..., ::-1]))
    out = load_image(p).pixels
    # Low byte must survive: 8-bit truncation would be off by up to 255/65535.
    np.testing.assert_allclose(out, rgb16 / 65535.0, atol=1e-6)

    grey16 = rng.integers(0, 65536, (9, 10), dtype=np.uint16)
    pg = tmp_path / "deep_grey.png"
    cv2.imwrite(str(pg), grey16)
    outg = load_image(pg).pixels
    np.testing.assert_allclose(outg[..., 1], grey16 / 65535.0, atol=1e-6)


def test_rgba_and_grey_png_files(tmp_path):
    rgb = _rand_rgb(seed=3)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    np.testing.assert_array_equal(to_uint8(load_image(tmp_path / "a.png").pixels), rgb)
    g = to_uint8(load_image(tmp_path / "g.png").pixels)
    assert g.shape == rgb.shape
    np.testing.assert_array_equal(g[..., 2], rgb[..., 0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_and_numpy_path(tmp_path, orientation):
    """Pillow's exif_transpose (8-bit path) and our numpy version (16-bit path) agree."""
    rgb = _rand_rgb(7, 12, seed=orientation)
    p = tmp_path / "o.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(p, exif=exif)
    img = load_image(p)
    assert img.exif_orientation == orientation
    expected = np.asarray(ImageOps.exif_transpose(_with_exif(rgb, orientation)))
    np.testing.assert_array_equal(to_uint8(img.pixels), expected)
    np.testing.assert_array_equal(_apply_orientation(rgb, orientation), expected)
    if orientation in (5, 6, 7, 8):
        assert img.pixels.shape[:2] == (12, 7)


def _with_exif(rgb, orientation):
    im = Image.fromarray(rgb)
    im.getexif()[0x0112] = orientation
    return im


def test_pillow_images_read_like_their_files(tmp_path):
    rgb = _rand_rgb(7, 12, seed=3)
    p = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(p, exif=exif, quality=95)
    with Image.open(p) as pil:  # lazily opened, EXIF still to apply: as upright as the file itself
        img = load_image(pil)
    from_file = load_image(p)
    assert img.name == "turned.jpg" and img.exif_orientation == 6 and img.pixels.shape == (12, 7, 3)
    np.testing.assert_array_equal(img.pixels, from_file.pixels)
    # modes of every kind, through the same rules as arrays: palette, grey + alpha over white
    pal = Image.fromarray(rgb).convert("P")
    np.testing.assert_allclose(load_image(pal).pixels, np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)
    la = Image.fromarray(np.zeros((4, 4, 2), np.uint8), "LA")
    np.testing.assert_array_equal(load_image(la, name="x").pixels, np.ones((4, 4, 3), np.float32))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(HOPPER.read_bytes()[:5000])
    with Image.open(cut) as pil, pytest.raises(ImageLoadError, match=r"cannot read image 'cut\.jpg': .+"):
        load_image(pil)  # the decode happens here, and fails here


def test_missing_file_raises_with_name(tmp_path):
    with pytest.raises(ImageLoadError, match=r"cannot read image 'nope\.jpg': no such file"):
        load_image(tmp_path / "nope.jpg")


def test_corrupt_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ImageLoadError, match=r"cannot read image 'bad\.jpg': "):
        load_image(bad)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(HOPPER.read_bytes()[:5000])
    with pytest.raises(ImageLoadError, match=r"cannot read image 'cut\.jpg': .+"):
        load_image(cut)
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("arr, reason", [
    (np.zeros((4, 5, 2), np.uint8), "unsupported array shape"),
    (np.zeros((4, 5, 3), np.int32), "unsupported dtype"),
    (np.full((4, 5, 3), np.nan), "NaN"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.full((4, 5, 3), 255.0, np.float32), r"float values run up to 255; floats must be in \[0, 1\]"),
])
def test_bad_arrays(arr, reason):
    with pytest.raises(ImageLoadError, match=reason):
        load_image(arr)


def test_bad_source_type():
    with pytest.raises(ImageLoadError, match="expected a path, a numpy array, a torch tensor or a Pillow image, got int"):
        load_image(42)


def test_torch_tensors_channels_last_and_first():
    import torch

    rgb8 = _rand_rgb()
    want = load_image(rgb8).pixels
    t = torch.from_numpy(rgb8)
    np.testing.assert_array_equal(load_image(t).pixels, want)                      # (H, W, 3) uint8
    chw = (t.permute(2, 0, 1).float() / 255).requires_grad_()
    np.testing.assert_allclose(load_image(chw).pixels, want, atol=1e-6)           # (3, H, W) float
    grey = torch.from_numpy(rgb8[..., 0])[None]                                   # (1, H, W)
    assert load_image(grey).pixels.shape == rgb8.shape
    with pytest.raises(ImageLoadError, match="'frame': unsupported dtype int64"):
        load_image(torch.zeros(4, 5, 3, dtype=torch.int64), name="frame")
