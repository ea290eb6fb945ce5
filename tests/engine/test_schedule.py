"""Learning-rate curves, checked against formulas written out independently here."""

import itertools
import math

import pytest
import torch

from trainwell.engine.schedule import build_scheduler, lr_factor


def reference(step: int, warmup: int, total: int, decay: str, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    shape = {"linear": 1 - t, "cosine": (1 + math.cos(math.pi * t)) / 2, "constant": 1.0}[decay]
    return shape if decay == "constant" else floor + (1 - floor) * shape


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_curve_matches_reference(decay: str) -> None:
    kwargs = {"warmup_steps": 10, "total_steps": 110, "decay": decay, "min_lr_ratio": 0.05}
    for step in range(0, 130):
        assert lr_factor(step, **kwargs) == pytest.approx(reference(step, 10, 110, decay, 0.05), abs=1e-12)


def test_curve_landmarks() -> None:
    kw = {"warmup_steps": 4, "total_steps": 104, "min_lr_ratio": 0.1}
    assert lr_factor(0, decay="cosine", **kw) == pytest.approx(0.25)  # first update already gets LR > 0
    assert lr_factor(3, decay="cosine", **kw) == pytest.approx(1.0)  # warmup ends at the peak
    assert lr_factor(54, decay="cosine", **kw) == pytest.approx(0.55)  # half-way: midpoint of [0.1, 1]
    assert lr_factor(54, decay="linear", **kw) == pytest.approx(0.55)
    assert lr_factor(104, decay="linear", **kw) == pytest.approx(0.1)  # floor at the end ...
    assert lr_factor(500, decay="cosine", **kw) == pytest.approx(0.1)  # ... and after it
    values = [lr_factor(s, decay="cosine", **kw) for s in range(4, 105)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone decay


def test_no_warmup_starts_at_peak() -> None:
    assert lr_factor(0, warmup_steps=0, total_steps=10, decay="linear", min_lr_ratio=0.0) == 1.0


def test_scheduler_applies_curve_to_optimizer() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=6, decay="linear", min_lr_ratio=0.0)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * reference(s, 2, 6, "linear", 0.0) for s in range(6)]
    assert seen == pytest.approx(expected)
