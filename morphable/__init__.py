"""Morphable face models: data, loaders, evaluation (model -> mesh). Units: mm."""
from .model import MorphableModel, MM_PER_CM

__all__ = ["MorphableModel", "MM_PER_CM"]
from .ict import ICT_COMMIT, REGIONS, ModelLoadError, load_ict  # noqa: E402

__all__ += ["ICT_COMMIT", "REGIONS", "ModelLoadError", "load_ict"]
