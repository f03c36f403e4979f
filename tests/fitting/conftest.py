"""Fixtures shared by the end-to-end fitting tests (test_coarse, test_api, test_cli, test_pipeline_photos).

Session-wide model fixtures (``ict_dir``, ``face_model``, ``closed_model``,
``faces_dir``) come from ``tests/conftest.py``; here: the photos and the
broken inputs those tests feed the toolkit.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

# Two easy frontal photos from the shared set (see /work/shared/faces/SOURCES.md).
GOOD_PHOTOS = ("13_east_asian_man_frontal.jpg", "14_black_woman_frontal.jpg")


@pytest.fixture(scope="session")
def good_photos(faces_dir) -> List[Path]:
    paths = [faces_dir / name for name in GOOD_PHOTOS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.fail(f"test photos missing: {missing}")
    return paths


@pytest.fixture(scope="session")
def all_photos(faces_dir) -> List[Path]:
    """Every JPEG of the shared set (8 photos)."""
    paths = sorted(faces_dir.glob("*.jpg"))
    assert len(paths) >= 8, f"expected the 8 shared photos in {faces_dir}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict:
    """A corrupt JPEG (random bytes) and a face-less image (uniform grey PNG)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bad_inputs")
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    grey = folder / "grey.png"
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(grey)
    return {"corrupt": corrupt, "grey": grey}



@pytest.fixture(scope="module")
def model_args(ict_dir, face_model) -> List[str]:
    """The CLI's model arguments for subprocess fits (test_cli, test_workers, test_distributed).

    face_model: the session fixture that builds the cache entry the subprocesses read."""
    return ["--model-dir", str(ict_dir), "--no-progress"]
