"""Checks of what a user passes (photo files, an output folder) that need nothing heavy.

Standard library only: ``fit-face`` and the examples run these before they
import torch and MediaPipe and load the model (4-8 s), so a typo is reported
at once, in one line, and nothing has been created yet. Stage names are
checked by :func:`fitting.stages.check_stages` (the stage list's own module, as light).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

def photo_problem(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why the photo file ``path`` cannot be read, in a few words (None when it opens).

    Only whether the file opens: whether it is an image is found when it is
    decoded, and reported with that photo's result.
    """
    p = Path(path)
    if p.is_dir():
        return "a folder, not an image (pass the files in it, e.g. DIR/*.jpg)"
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "not a regular file"  # a FIFO or a device: opening it could block or never end
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        return f"cannot open it ({exc.strerror or exc})"
    return None


def folder_problem(folder: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``folder`` could not be created or written (None when it can), without creating anything."""
    p = Path(folder).resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None
