"""What a fit gives back: one :class:`FitResult` per face, plain data (numpy), built once by the pipeline."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from .detections import FaceCrop
from .mesh import Mesh
from .stages import STAGE_NAMES


class FitError(RuntimeError):
    """A photo could not be fitted (message: one line)."""


@dataclass
class FitResult:
    """The fit of one face. ``ok`` False: ``error`` says why in one line and the rest is empty.

    Meshes are in the model frame (mm); ``camera`` maps them into the photo:
    ``intrinsics`` (4,) photo pixels, ``rotation`` (3, 3), ``translation`` (3,) mm
    (and the working crop's ``crop_intrinsics``, ``crop_box_xy_scale``, ``photo_size_hw``).
    ``licenses``: file name -> text of the notices that travel with the meshes (the model's).
    """

    name: str  # unique within one fit_many call; also the CLI's output folder name
    ok: bool = True
    error: Optional[str] = None
    crop: Optional[FaceCrop] = None
    meshes: Dict[str, Mesh] = field(default_factory=dict)
    params: Dict[str, object] = field(default_factory=dict)
    camera: Dict[str, np.ndarray] = field(default_factory=dict)
    images: Dict[str, np.ndarray] = field(default_factory=dict)  # report pictures and fine-stage maps
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)  # e.g. the fine depth map
    timings: Dict[str, float] = field(default_factory=dict)
    licenses: Dict[str, str] = field(default_factory=dict)
    # The 68 iBUG points on the last model-topology mesh (landmarks68.json): model_mm, camera_mm (68, 3),
    # photo_px (68, 2), depth_mm (68,), vertex_ids (68,), the stage and the point order.
    landmarks68: Dict[str, object] = field(default_factory=dict)
    source: Optional[str] = None  # the image's path as given (None for arrays and tensors)
    index: int = 0  # position of its photo in the sources given to fit_many / iter_fit

    @property
    def mesh(self) -> Optional[Mesh]:
        """The last stage's mesh."""
        for stage in reversed(STAGE_NAMES):
            if stage in self.meshes:
                return self.meshes[stage]
        return None

    def save(self, folder: Union[str, os.PathLike]) -> Path:
        from .outputs.folder import save_result
        return save_result(self, Path(folder))
