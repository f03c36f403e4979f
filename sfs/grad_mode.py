"""Autograd inside the optimisers, whatever the caller has switched off.

The Adam stages (the coarse stage's photometric polish, :mod:`fitting.photometric`,
and the fine stage's shape from shading, :func:`sfs.refine.refine_depth`)
differentiate their energies. A caller may have autograd off around a fit:
``torch.no_grad()``, ``torch.set_grad_enabled(False)`` (as some libraries set
globally) or ``torch.inference_mode()``.

- The first two only stop recording; :func:`gradients_on` turns recording back
  on for the optimisation and restores the caller's mode on the way out.
- Inference mode also marks every tensor made under it as an *inference
  tensor*, which autograd can never save for backward ("Inference tensors
  cannot be saved for backward"), not even after the mode is left. So
  :func:`gradients_on` leaves inference mode too, and the optimisers pass their
  inputs through :func:`autograd_usable`, which replaces inference tensors by
  normal copies (bit-identical values; normal tensors are passed through, so a
  fit with autograd on copies nothing). :func:`with_gradients` does both for
  a whole function.

What the optimisers hand back is detached, so nothing is recorded past them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@contextlib.contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd recording on and inference mode off inside; the caller's modes are restored after."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_usable(x: T) -> T:
    """``x`` with every inference tensor in it replaced by a normal copy.

    ``x``: a tensor, a dataclass instance (its fields; a copy of the instance is
    returned when any field changed), a dict, list or tuple of those, or
    anything else (returned as it is). Call inside :func:`gradients_on`: a copy
    made under inference mode would be an inference tensor again.
    """
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_inference() else x
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        changes = {}
        for f in dataclasses.fields(x):
            if not f.init:
                continue
            value = getattr(x, f.name)
            usable = autograd_usable(value)
            if usable is not value:
                changes[f.name] = usable
        return dataclasses.replace(x, **changes) if changes else x
    if isinstance(x, dict):
        out = {k: autograd_usable(v) for k, v in x.items()}
        return out if any(out[k] is not x[k] for k in x) else x
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        out = [autograd_usable(v) for v in x]
        return type(x)(out) if any(a is not b for a, b in zip(out, x)) else x
    return x


def with_gradients(fn: Callable) -> Callable:
    """Decorator for an optimiser: ``fn`` runs inside :func:`gradients_on`, its arguments passed
    through :func:`autograd_usable`, so that it works whatever autograd mode it is called in."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with gradients_on():
            return fn(*autograd_usable(args), **autograd_usable(kwargs))
    return wrapper
