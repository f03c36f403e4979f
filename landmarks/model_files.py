"""The MediaPipe face model files shipped in ``landmarks/data`` and their SHA-256 check.

The files come byte for byte from the ``mediapipe==0.10.21`` wheel (Apache-2.0,
``landmarks/data/MEDIAPIPE_LICENSE.txt``); ``tools/make_facemesh_data.py``
copied them and wrote ``landmarks/data/SHA256SUMS``. Every read goes through
:func:`read_data_file`, which checks the hash, so a missing, truncated or
swapped file stops with one line saying which file and what to do, instead
of a TFLite error from deep inside the interpreter.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .errors import ModelFileError

__all__ = ["DATA_DIR", "ModelFileError", "read_data_file", "read_json", "expected_hashes"]

DATA_DIR = Path(__file__).resolve().parent / "data"
SUMS_FILE = "SHA256SUMS"


@lru_cache(maxsize=None)
def expected_hashes() -> dict[str, str]:
    """``{file name: SHA-256 hex}`` from ``landmarks/data/SHA256SUMS``."""
    path = DATA_DIR / SUMS_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ModelFileError(f"face model checksum list '{path}' is missing ({e.strerror}); "
                             f"reinstall facefit") from None
    sums = {}
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if name:
            sums[name] = digest
    return sums


def read_data_file(name: str) -> bytes:
    """The bytes of ``landmarks/data/<name>``, checked against ``SHA256SUMS``.

    Raises:
        ModelFileError: the file is missing, unreadable, not listed, or its
            SHA-256 differs (one line naming the file and the fix).
    """
    path = DATA_DIR / name
    expected = expected_hashes().get(name)
    if expected is None:
        raise ModelFileError(f"'{name}' is not listed in {DATA_DIR / SUMS_FILE}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"face model file '{path}' is missing or unreadable ({e.strerror}); "
                             f"reinstall facefit") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(f"face model file '{path}' is damaged (SHA-256 differs from SHA256SUMS, "
                             f"{len(data)} bytes); reinstall facefit")
    return data


def read_json(name: str):
    """A checked JSON data file of ``landmarks/data``, parsed."""
    return json.loads(read_data_file(name))
