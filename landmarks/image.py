"""Reading photographs into the toolkit's one image convention.

Inside facefit an image is a ``float32`` numpy array of shape ``(H, W, 3)``,
RGB, values in ``[0, 1]``, rows top to bottom (pixel ``[row, col]`` covers
``[col, col+1) x [row, row+1)`` in ``(u, v)`` pixel coordinates, u right,
v down). :func:`load_image` turns files and arrays of the usual kinds into
that, and :func:`to_uint8` goes back to 8-bit for libraries that want it.

Input rules (files and arrays alike):

* EXIF orientation (files): applied, so the pixels are the upright image a
  photo viewer shows; landmarks are then in that upright frame.
* Greyscale ``(H, W)`` / ``(H, W, 1)``: replicated to 3 channels.
* Alpha (RGBA, LA, palette with transparency): composited over **white**
  (``rgb * a + (1 - a)``), so a cut-out face on a transparent background
  looks like a studio shot rather than a face on black.
* ``uint8`` is divided by 255, ``uint16`` by 65535 (16-bit PNG/TIFF files
  keep their full depth: Pillow would truncate 16-bit RGB to 8 bits, so
  those are decoded with OpenCV). Float input is clipped to ``[0, 1]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

if TYPE_CHECKING:  # tensors are read by duck typing; torch is not needed here
    import torch

__all__ = ["LoadedImage", "load_image", "to_uint8", "ImageSource"]

ImageSource = Union[str, Path, np.ndarray, "torch.Tensor", Image.Image, "LoadedImage"]

_EXIF_ORIENTATION_TAG = 0x0112
_ARRAY_NAME = "<array>"


@dataclass(frozen=True)
class LoadedImage:
    """An image in the toolkit convention plus where it came from.

    Attributes:
        pixels: ``(H, W, 3)`` float32 RGB in ``[0, 1]``, upright (EXIF applied).
        name: file name (for messages), or ``"<array>"`` for array input.
        path: the file's path, or ``None`` for array input.
        exif_orientation: the EXIF orientation tag that was applied (1 = none).
    """

    pixels: np.ndarray
    name: str
    path: Path | None = None
    exif_orientation: int = 1

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.height, self.width


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` float image in ``[0, 1]`` -> uint8 of the same shape (rounded, clipped).

    uint8 input is returned unchanged (no copy).
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    # +0.5 then truncation rounds to nearest; clip first so out-of-range floats saturate.
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def load_image(source: ImageSource, name: str | None = None) -> LoadedImage:
    """Read ``source`` into a :class:`LoadedImage` (``(H, W, 3)`` float32 RGB in ``[0, 1]``).

    Args:
        source: a file path (``str`` / ``Path``), a numpy array (uint8, uint16,
            bool or float in ``[0, 1]``; ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``
            RGB or ``(H, W, 4)`` RGBA), a torch tensor of the same kinds (also
            channels first, ``(C, H, W)`` with C = 1, 3 or 4, as torchvision
            keeps images), a Pillow image (EXIF orientation applied, as for
            files), or an already loaded :class:`LoadedImage` (returned as is).
        name: label used in messages for array input (default ``"<array>"``;
            a Pillow image opened from a file: that file's name).

    Raises:
        ImageLoadError: missing, unreadable or corrupt file, or an array of an
            unsupported shape / dtype / containing NaN. The message is
            ``"cannot read image '<name>': <reason>"``.
    """
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, np.ndarray):
        label = name or _ARRAY_NAME
        return LoadedImage(_array_to_float_rgb(source, label), label, None, 1)
    if isinstance(source, (str, Path)):
        return _load_file(Path(source))
    if isinstance(source, Image.Image):
        label = name or Path(getattr(source, "filename", "") or _ARRAY_NAME).name
        orientation = int(source.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
        try:
            arr = _pil_to_array(ImageOps.exif_transpose(source))
        except (OSError, ValueError) as exc:  # a lazily opened image decodes here: truncated data fails now
            raise _fail(label, str(exc) or type(exc).__name__) from None
        return LoadedImage(_array_to_float_rgb(arr, label), label, None, orientation if 1 <= orientation <= 8 else 1)
    if _is_tensor(source):
        label = name or _ARRAY_NAME
        arr = source.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # channels first -> last
        return LoadedImage(_array_to_float_rgb(arr, label), label, None, 1)
    raise ImageLoadError(f"cannot read image '{name or _ARRAY_NAME}': expected a path, a numpy array, a "
                         f"torch tensor or a Pillow image, got {type(source).__name__}")


def _is_tensor(source) -> bool:
    # duck-typed: this module does not need torch to read files and arrays
    return type(source).__module__.startswith("torch") and hasattr(source, "detach") and hasattr(source, "numpy")


# --------------------------------------------------------------------------- files

def _fail(name: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot read image '{name}': {reason}")


def _load_file(path: Path) -> LoadedImage:
    name = path.name or str(path)
    if not path.exists():
        raise _fail(name, "no such file")
    if path.is_dir():
        raise _fail(name, "is a directory")
    try:
        with Image.open(path) as pil:
            # Image.open is lazy: load() forces the full decode so truncated or
            # corrupt data fails here rather than somewhere downstream.
            pil.load()
            orientation = int(pil.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
            fmt = pil.format
            mode = pil.mode
            if fmt in ("PNG", "TIFF") and mode in ("RGB", "RGBA"):
                deep = _read_deep_with_opencv(path)
            else:
                deep = None
            if deep is not None:
                # 16-bit colour: Pillow has already dropped the low byte, so
                # use OpenCV's pixels and apply the orientation ourselves.
                arr = _apply_orientation(deep, orientation)
            else:
                upright = ImageOps.exif_transpose(pil)
                arr = _pil_to_array(upright)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise _fail(name, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise _fail(name, f"too many pixels ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise _fail(name, reason) from None
    pixels = _array_to_float_rgb(arr, name)
    return LoadedImage(pixels, name, path, orientation if 1 <= orientation <= 8 else 1)


def _read_deep_with_opencv(path: Path) -> np.ndarray | None:
    """Return the RGB(A) uint16 pixels of a 16-bit PNG/TIFF, or ``None`` if it is 8-bit."""
    data = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: works for non-ASCII paths
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    if arr.shape[2] == 3:
        return arr[..., ::-1]            # BGR -> RGB
    if arr.shape[2] == 4:
        return arr[..., [2, 1, 0, 3]]    # BGRA -> RGBA
    return None


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``1..8`` to an ``(H, W, ...)`` array, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return np.swapaxes(arr[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _pil_to_array(pil: Image.Image) -> np.ndarray:
    """Pillow image of any common mode -> uint8/uint16/float32 array, grey/RGB/RGBA."""
    mode = pil.mode
    if mode in ("RGB", "RGBA", "L"):
        return np.asarray(pil)
    if mode.startswith("I;16"):
        return np.asarray(pil).astype(np.uint16)
    if mode == "I":
        # 32-bit int greyscale: how Pillow opens some 16-bit grey PNGs/TIFFs.
        return np.clip(np.asarray(pil), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(pil, dtype=np.float32)
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in pil.info):
        return np.asarray(pil.convert("RGBA"))
    if mode == "1":
        return np.asarray(pil.convert("L"))
    # P, CMYK, YCbCr, LAB, HSV, ...: let Pillow do the colour conversion.
    return np.asarray(pil.convert("RGB"))


# --------------------------------------------------------------------------- arrays

def _array_to_float_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """Any supported array -> contiguous ``(H, W, 3)`` float32 RGB in ``[0, 1]``."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise _fail(name, f"unsupported array shape {arr.shape}; expected (H, W), (H, W, 1), "
                          "(H, W, 3) or (H, W, 4)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _fail(name, f"empty image of shape {arr.shape}")

    if arr.dtype == np.uint8:
        img = arr.astype(np.float32) / np.float32(255.0)
    elif arr.dtype == np.uint16:
        img = arr.astype(np.float32) / np.float32(65535.0)
    elif arr.dtype == np.bool_:
        img = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        img = arr.astype(np.float32)
        if not np.isfinite(img).all():
            raise _fail(name, "array contains NaN or infinite values")
        top = float(img.max()) if img.size else 0.0
        if top > 2.0:
            # clipping a 0..255 float image to [0, 1] would leave a white picture and a puzzling "no face"
            raise _fail(name, f"float values run up to {top:g}; floats must be in [0, 1] "
                              "(divide by 255, or pass uint8)")
        img = np.clip(img, 0.0, 1.0)
    else:
        # int32/int64 have no agreed full-scale value; guessing would silently
        # give a black or saturated image.
        raise _fail(name, f"unsupported dtype {arr.dtype}; expected uint8, uint16, bool or float")

    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        alpha = img[..., 3:4]
        img = img[..., :3] * alpha + (1.0 - alpha)   # composite over white
    return np.ascontiguousarray(img, dtype=np.float32)
