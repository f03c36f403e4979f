"""The fitting stages, in order: each a module with a ``STAGE`` (:class:`fitting.stages.context.Stage`).

Every stage is one function of one shape, ``run(context, batch, previous) -> result``:
the frozen :class:`~fitting.stages.context.FitContext` built once by
:class:`fitting.FaceFitter`, the :class:`~fitting.detections.DetectionBatch` of
the faces in hand, and the previous stage's result (None for the first); its
result carries the batch's :class:`~fitting.camera.Camera` and its vertices
(model frame, mm) on to the next.

A new stage is a new module here with a ``STAGE`` and one more name in
:data:`STAGE_NAMES` (stages run in this order; a run may stop after any of them).
"""
from __future__ import annotations

import importlib
from typing import Tuple

#: Stage names in order; each is the module ``fitting.stages.<name>``.
STAGE_NAMES: Tuple[str, ...] = ("coarse", "medium", "fine")


def load_stage(name: str):
    """The :class:`~fitting.stages.context.Stage` of ``name`` (its module imported on first use, so a
    coarse-only run never loads the fine stage's dependencies)."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").STAGE


def check_stages(stages) -> Tuple[str, ...]:
    """``stages`` as a tuple, or ValueError (one line) unless it is a non-empty prefix of STAGE_NAMES."""
    stages = tuple(stages)
    bad = [s for s in stages if s not in STAGE_NAMES]
    if bad:
        raise ValueError(f"unknown stage {bad[0]!r}; stages are {', '.join(STAGE_NAMES)}")
    if not stages:
        raise ValueError(f"no stages given; stages must start at coarse: {', '.join(STAGE_NAMES)}")
    if stages != STAGE_NAMES[:len(stages)]:
        raise ValueError(f"stages must start at coarse and not skip one: got {','.join(stages)}")
    return stages
