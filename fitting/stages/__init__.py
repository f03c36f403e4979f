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
from typing import Sequence, Tuple, Union

#: Stage names in order; each is the module ``fitting.stages.<name>``.
STAGE_NAMES: Tuple[str, ...] = ("coarse", "medium", "fine")


def load_stage(name: str):
    """The :class:`~fitting.stages.context.Stage` of ``name`` (its module imported on first use, so a
    coarse-only run never loads the fine stage's dependencies)."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").STAGE


def check_stages(stages: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """The stages to run, from ``("coarse", "medium")`` or ``"coarse,medium"``; ValueError (one line)
    unless they start at coarse and skip none (each stage starts from the previous one's result).

    Standard library only, like this package's import: the CLI checks its arguments with it before
    anything heavy loads.
    """
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stages = tuple(stages)
    bad = [s for s in stages if s not in STAGE_NAMES]
    if bad:
        raise ValueError(f"unknown stage {bad[0]!r}; stages are {', '.join(STAGE_NAMES)}")
    if not stages:
        raise ValueError(f"no stages given; stages must start at coarse: {', '.join(STAGE_NAMES)}")
    if stages != STAGE_NAMES[:len(stages)]:
        raise ValueError(f"stages must start at coarse and not skip one: got {','.join(stages)}")
    return stages
