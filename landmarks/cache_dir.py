"""The user's cache folder for this toolkit: downloads and things made once per machine.

``FACEFIT_CACHE_DIR`` overrides it; otherwise the platform's cache folder (``~/.cache/facefit`` on
Linux). The morphable model's copy lives there too (:mod:`morphable.ict` reads the same variable).
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "FACEFIT_CACHE_DIR"


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("facefit"))
