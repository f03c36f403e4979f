"""Output names of photos: a folder name per photo, unique across one run. No torch: the CLI names
the photos before any worker process loads the model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["unique_names", "path_of", "name_of"]


def unique_names(names: Sequence[str]) -> List[str]:
    """``names`` with repeats made distinct: the first keeps its name, later ones get -2, -3, ...

    Two photos called face.jpg in different folders must not write to the
    same output folder; a suffix that is itself taken is skipped.
    """
    taken = set(names)
    used: set = set()
    out = []
    for name in names:
        unique, k = name, 1
        while unique in used or (unique != name and unique in taken):
            k += 1
            unique = f"{name}-{k}"
        used.add(unique)
        out.append(unique)
    return out


def path_of(source) -> Optional[str]:
    """The file an image came from: a path as given, a Pillow image's file; None for arrays and tensors."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "filename", None) or None  # "" for a Pillow image made in memory


def name_of(source, i: int) -> str:
    """The output name of the ``i``-th image: its file's stem, or ``image_<i>`` for one made in memory."""
    path = path_of(source)
    return Path(path).stem if path else f"image_{i:03d}"
