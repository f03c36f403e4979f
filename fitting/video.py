"""Frames of a video file as photos (OpenCV), for the same-person fit (issue 18).

Frames are read one at a time and handed on as RGB uint8 arrays, so a long
clip is never held whole; ``every`` and ``max_frames`` thin it out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

if TYPE_CHECKING:  # numpy and OpenCV load when frames are read: fit-face checks its inputs without them
    import numpy as np

# File name endings taken for videos (case-insensitive); anything else is a photo.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideoError(ValueError):
    """A video that cannot be opened or decoded (message: one line)."""


@dataclass
class Frame:
    """One frame: ``index`` in the file (from 0), ``time_s`` its time in seconds (index / frame
    rate; None where the file states no rate), ``pixels`` (H, W, 3) uint8 RGB."""

    index: int
    time_s: Optional[float]
    pixels: np.ndarray


def is_video(path: Union[str, os.PathLike]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def frame_rate(path: Union[str, os.PathLike]) -> Optional[float]:
    """Frames per second the file states (None: none or unreadable)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if fps > 0 else None


def read_frames(path: Union[str, os.PathLike], every: int = 1, max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Every ``every``-th frame of ``path`` from the first, at most ``max_frames`` of them.

    Raises VideoError when the file does not open as a video or holds no frame that decodes.
    """
    import cv2
    import numpy as np
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open '{path}' as a video")
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    fps = fps if fps > 0 else None
    index, given = 0, 0
    try:
        while max_frames is None or given < max_frames:
            if index % every:
                if not cap.grab():  # skipped frames are not decoded
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            yield Frame(index=index, time_s=None if fps is None else index / fps,
                        pixels=np.ascontiguousarray(bgr[..., ::-1]))
            given += 1
            index += 1
    finally:
        cap.release()
    if given == 0:
        raise VideoError(f"no frame of '{path}' could be decoded")


def frame_views(path: Union[str, os.PathLike], name: str, every: int = 1,
                max_frames: Optional[int] = None) -> Iterator[tuple]:
    """:func:`read_frames` as same-person views ``(view name, pixels, path, time_s)``: the frame's name
    is ``NAME#fINDEX`` (six digits), for the API and the CLI alike. Raises VideoError as it does."""
    for f in read_frames(path, every, max_frames):
        yield f"{name}#f{f.index:06d}", f.pixels, str(path), f.time_s
