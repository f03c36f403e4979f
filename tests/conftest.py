"""Shared fixtures: the ICT model unpacked once per session from ../shared/ict-facekit.

Nothing from the model is committed: the archive beside the repository is
unpacked into a temporary folder (or FACEFIT_ICT_DIR names an unpacked copy),
and the model cache goes to a temporary folder so that tests never touch the
user's cache.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFIT_SHARED", REPO.parent / "shared"))
ICT_ARCHIVE_DIR = SHARED / "ict-facekit"
FACES_DIR = SHARED / "faces"

# Before any test module imports the toolkit: a private model cache.
_CACHE = tempfile.mkdtemp(prefix="facefit-test-cache-")
os.environ["FACEFIT_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.pop("FACEFIT_ICT_URL", None)


def ict_archive() -> Path:
    found = sorted(ICT_ARCHIVE_DIR.glob("ICT-FaceKit-*.tar.xz"))
    if not found:
        pytest.fail(f"the ICT model archive is missing: expected {ICT_ARCHIVE_DIR}/ICT-FaceKit-*.tar.xz "
                    "(set FACEFIT_SHARED to the folder holding ict-facekit/ and faces/)")
    return found[0]


@pytest.fixture(scope="session")
def ict_archive_path() -> Path:
    return ict_archive()


@pytest.fixture(scope="session")
def ict_dir(tmp_path_factory) -> Path:
    """An unpacked ICT-FaceKit folder (FACEFIT_ICT_DIR, or the shared archive unpacked once)."""
    env = os.environ.get("FACEFIT_ICT_DIR")
    if env and (Path(env) / "FaceXModel").is_dir():
        return Path(env)
    dest = tmp_path_factory.mktemp("ict")
    with tarfile.open(ict_archive(), "r:*") as tar:
        tar.extractall(dest, filter="data")
    (root,) = [p for p in dest.iterdir() if (p / "FaceXModel").is_dir()]
    return root


@pytest.fixture(scope="session")
def face_model(ict_dir):
    from morphable import load_ict
    return load_ict(ict_dir, region="face", progress=False)


@pytest.fixture(scope="session")
def closed_model(ict_dir):
    from morphable import load_ict
    return load_ict(ict_dir, region="face_closed", progress=False)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES_DIR.is_dir():
        pytest.fail(f"the real test photos are missing: expected {FACES_DIR}")
    return FACES_DIR
