"""Where the 3DDFA_V2 regressor's files are for the tests: ``../shared/3ddfa`` beside the repository, or
``$FACEFIT_SHARED/3ddfa`` (as tests/conftest.py finds the other shared data). Tests never download them."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DDFA_DIR = Path(os.environ.get("FACEFIT_SHARED", REPO.parent / "shared")) / "3ddfa"
if not (DDFA_DIR / "mb05_120x120.pth").is_file():
    raise RuntimeError(f"the 3DDFA_V2 regressor's files are missing: expected them in {DDFA_DIR} "
                       "(set FACEFIT_SHARED)")
