"""Exceptions raised by the ``landmarks`` package.

All derive from :class:`LandmarksError` so a caller can catch the whole
family; each message is one line naming the image and the reason.
"""
from __future__ import annotations


class LandmarksError(Exception):
    """Base class of every error raised by ``landmarks``."""


class ImageLoadError(LandmarksError):
    """An image could not be read or has an unsupported layout / dtype."""


class NoFaceError(LandmarksError):
    """Face Mesh found no face in the image."""


class FaceIndexError(LandmarksError, IndexError):
    """``face_index`` asked for a face that was not detected."""


class ModelFileError(LandmarksError):
    """A face model or data file of ``landmarks/data`` is missing or not the file it should be."""
