"""What every stage is given: the context (built once per fitter) and the shape of a stage.

``FitContext`` is frozen: the model, the landmark table, the renderer, the
device and each stage's settings do not change while faces are fitted, so one
context can serve any number of batches, threads or workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

import torch

from morphable import MorphableModel

from ..camera import Camera
from ..detections import DetectionBatch
from .correspondence import Correspondence


class StageResult(Protocol):
    """What every stage's result carries on: the batch's camera and its (B, V, 3) vertices
    (model frame, mm; ``camera.to_camera`` puts them in the camera frame)."""

    camera: Camera
    vertices: torch.Tensor


@dataclass(frozen=True)
class FitContext:
    """Everything a stage reads besides the batch. Built once by :class:`fitting.FaceFitter`.

    - ``model``: the morphable model, on ``device``;
    - ``correspondence``: where the detector's landmarks sit on the model's surface;
    - ``renderer``: :class:`fitting.rendering.renderer.Renderer` (CPU ray casting or nvdiffrast);
    - ``settings``: stage name -> that stage's settings dataclass (every stage of the run has one);
    - ``initializer``: optional callable ``(image, landmarks, model) -> CoarseInit`` (coarse stage).
    """

    model: MorphableModel
    correspondence: Correspondence
    renderer: Any
    device: torch.device
    settings: Mapping[str, Any] = field(default_factory=dict)
    initializer: Optional[Callable] = None


@dataclass(frozen=True)
class Stage:
    """A stage: its ``name``, its settings class (defaults when the user gives none) and
    ``run(context, batch, previous) -> result``."""

    name: str
    settings_type: type
    run: Callable[[FitContext, DetectionBatch, Optional[StageResult]], StageResult]
