"""Where the real test photos are: ``../shared/faces`` beside the repository, or ``$FACEFIT_SHARED/faces``
(as tests/conftest.py finds them). Missing photos stop the collection with this message instead of
leaving photo-parametrised tests with nothing to run."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FACES = Path(os.environ.get("FACEFIT_SHARED", REPO.parent / "shared")) / "faces"
PHOTOS = sorted(FACES.glob("*.jpg"))
if not PHOTOS:
    raise RuntimeError(f"the real test photos are missing: expected JPEGs in {FACES} (set FACEFIT_SHARED)")
