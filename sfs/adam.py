"""Adam, the update of ``torch.optim.Adam`` (defaults: no weight decay, no AMSGrad), for the fits' loops.

Why not ``torch.optim.Adam`` itself: constructing any ``torch.optim`` optimiser
imports ``torch._dynamo`` (its methods are wrapped to keep the compiler out),
1.2 s of a 13 s one-photo ``fit-face`` on a 2-core CPU (measured with
``python -X importtime``), for a compiler the toolkit never uses. The update is
a few lines; :mod:`tests.sfs.test_sfs_adam` checks it step for step against
``torch.optim.Adam``.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Union

import torch

ParamGroups = Union[Iterable[torch.Tensor], Iterable[Dict]]


class Adam:
    """Adam (Kingma and Ba 2015) over tensors or parameter groups, as ``torch.optim.Adam``.

    ``params``: tensors, or dicts with ``"params"`` (tensors) and optionally their own ``"lr"``.
    ``param_groups[i]["lr"]`` may be changed between steps (a schedule). Each tensor keeps its own
    step count (a tensor without a gradient is skipped, its count unchanged), as torch's does.
    """

    def __init__(self, params: ParamGroups, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: List[Dict] = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in groups]
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.state: Dict[torch.Tensor, Dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p),
                                             "exp_avg_sq": torch.zeros_like(p)}
                state["step"] += 1
                m, v, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1 = 1 - beta1 ** state["step"]
                bias2_sqrt = math.sqrt(1 - beta2 ** state["step"])
                p.addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(self.eps), value=-group["lr"] / bias1)


def cosine_annealed(optimizer: Adam, base_lrs: List[float], step: int, total: int) -> None:
    """Set each group's step size to ``base * (1 + cos(pi * step / total)) / 2``: from ``base`` at step 0
    to 0 at ``total`` (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``eta_min = 0``, closed form)."""
    factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
