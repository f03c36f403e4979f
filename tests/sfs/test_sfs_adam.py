"""sfs.adam against torch.optim.Adam: the same iterates, and no torch._dynamo import."""
import subprocess
import sys

import torch

from sfs.adam import Adam, cosine_annealed


def _problem(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(5, 7, generator=g)
    a = torch.randn(5, 7, generator=g).requires_grad_(True)
    b = torch.randn(3, generator=g).requires_grad_(True)
    unused = torch.zeros(2, requires_grad=True)  # never gets a gradient: skipped, as torch skips it
    return target, a, b, unused


def _loss(target, a, b):
    return ((a - target) ** 4).sum() + (b.sin() ** 2).sum() + (a.mean() * b).sum()


def test_the_same_iterates_as_torch_adam_with_groups_and_a_schedule():
    """Two groups with their own step sizes, a cosine schedule, 40 steps: equal to torch's to float rounding."""
    runs = []
    for kind in ("ours", "torch"):
        target, a, b, unused = _problem(0)
        groups = [{"params": [a], "lr": 0.05}, {"params": [b, unused], "lr": 0.2}]
        opt = Adam(groups) if kind == "ours" else torch.optim.Adam(groups)
        sched = None if kind == "ours" else torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40)
        for step in range(40):
            opt.zero_grad()
            _loss(target, a, b).backward()
            opt.step()
            if kind == "ours":
                cosine_annealed(opt, [0.05, 0.2], step + 1, 40)
            else:
                sched.step()
        runs.append((a.detach(), b.detach(), unused.detach()))
    (a1, b1, u1), (a2, b2, u2) = runs
    assert not torch.equal(a1, _problem(0)[1])  # it moved
    torch.testing.assert_close(a1, a2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b1, b2, rtol=1e-6, atol=1e-6)
    assert torch.equal(u1, u2) and not u1.any()


def test_constant_step_size_is_bitwise_torch_adam():
    out = []
    for cls in (Adam, torch.optim.Adam):
        target, a, b, _ = _problem(1)
        opt = cls([a, b], lr=0.01)
        for _ in range(25):
            opt.zero_grad()
            _loss(target, a, b).backward()
            opt.step()
        out.append(torch.cat([a.detach().flatten(), b.detach()]))
    assert torch.equal(out[0], out[1])


def test_using_it_does_not_import_torch_dynamo():
    """The reason it exists: torch.optim's optimisers import torch._dynamo (over a second at start-up)."""
    code = ("import sys, torch\nfrom sfs.adam import Adam\np = torch.zeros(3, requires_grad=True)\n"
            "o = Adam([p], lr=0.1)\n(p - 1).pow(2).sum().backward()\no.step()\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
