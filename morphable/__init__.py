"""Morphable face models: data, loaders, evaluation (model -> mesh). Units: mm."""
from .model import MorphableModel, MM_PER_CM

__all__ = ["MorphableModel", "MM_PER_CM"]
