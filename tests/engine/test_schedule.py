"""Every schedule family against an independent formula written here, step by step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainwell.config.schema import ScheduleConfig
from trainwell.engine.schedule import Curve, build_scheduler


def reference(step: int, warmup: int, total: int, decay: str, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    shape = {"linear": 1 - t, "cosine": (1 + math.cos(math.pi * t)) / 2, "constant": 1.0}[decay]
    return shape if decay == "constant" else floor + (1 - floor) * shape


def curve(total: int, **kwargs: object) -> Curve:
    return Curve(ScheduleConfig(**kwargs), total)  # type: ignore[arg-type]


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_curve_matches_reference(decay: str) -> None:
    c = curve(110, warmup_steps=10, decay=decay, min_lr_ratio=0.05)
    for step in range(0, 130):
        assert c.lr_factor(step) == pytest.approx(reference(step, 10, 110, decay, 0.05), abs=1e-12)


def test_curve_landmarks() -> None:
    cos = curve(104, warmup_steps=4, min_lr_ratio=0.1, decay="cosine")
    lin = curve(104, warmup_steps=4, min_lr_ratio=0.1, decay="linear")
    assert cos.lr_factor(0) == pytest.approx(0.25)  # first update already gets LR > 0
    assert cos.lr_factor(3) == pytest.approx(1.0)  # warmup ends at the peak
    assert cos.lr_factor(54) == pytest.approx(0.55)  # half-way: midpoint of [0.1, 1]
    assert lin.lr_factor(54) == pytest.approx(0.55)
    assert lin.lr_factor(104) == pytest.approx(0.1)  # floor at the end ...
    assert cos.lr_factor(500) == pytest.approx(0.1)  # ... and after it
    values = [cos.lr_factor(s) for s in range(4, 105)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone decay


def hf_linear_with_warmup(current_step: int, warmup: int, total: int) -> float:
    """transformers' get_linear_schedule_with_warmup lr_lambda, written out from its documented formula."""
    if current_step < warmup:
        return current_step / max(1, warmup)
    return max(0.0, (total - current_step) / max(1, total - warmup))


def test_warmup_starts_at_zero_reproduces_get_linear_schedule_with_warmup_step_for_step() -> None:
    c = curve(50, warmup_steps=7, warmup_starts_at_zero=True, decay="linear")
    assert c.lr_factor(0) == 0.0  # the first update uses LR 0, as transformers does
    for step in range(0, 60):
        assert c.lr_factor(step) == pytest.approx(hf_linear_with_warmup(step, 7, 50), abs=1e-12)


def test_against_transformers_when_installed() -> None:
    transformers = pytest.importorskip("transformers")
    param = torch.nn.Parameter(torch.zeros(1))
    ours_opt, theirs_opt = torch.optim.SGD([param], lr=0.5), torch.optim.SGD([param], lr=0.5)
    cfg = ScheduleConfig(warmup_steps=5, warmup_starts_at_zero=True, decay="linear")
    ours = build_scheduler(ours_opt, cfg, 40)
    theirs = transformers.get_linear_schedule_with_warmup(theirs_opt, 5, 40)
    for _ in range(45):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(theirs_opt.param_groups[0]["lr"], abs=1e-15)
        ours_opt.step(), theirs_opt.step()
        ours.step(), theirs.step()


def test_cosine_warmup_shape() -> None:
    c = curve(100, warmup_steps=10, warmup="cosine", decay="constant")
    for step in range(10):
        assert c.lr_factor(step) == pytest.approx((1 - math.cos(math.pi * (step + 1) / 10)) / 2, abs=1e-12)


def test_step_decay_multiplies_at_each_milestone_down_to_the_floor() -> None:
    cfg = ScheduleConfig(decay="step", step_milestones=[30, 60, 90], step_factor=0.1, min_lr_ratio=0.005)
    c = Curve(cfg, 120, milestones=(30, 60, 90))
    expected = [1.0 if s < 30 else 0.1 if s < 60 else 0.01 if s < 90 else 0.005 for s in range(120)]
    assert [c.lr_factor(s) for s in range(120)] == pytest.approx(expected)


def onecycle_reference(step: int, total: int, pct: float, div: float, moms: tuple[float, float]) -> tuple[float, float]:
    """OpenPCDet's OneCycle written from its description: cosine phases split at int(pct * total)."""

    def cos(a: float, b: float, p: float) -> float:
        return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)

    split = int(pct * total)
    if step < split:
        p = step / split
        return cos(1 / div, 1.0, p), cos(moms[0], moms[1], p)
    p = (step - split) / (total - split)
    return cos(1.0, 1 / div / 1e4, p), cos(moms[1], moms[0], p)


def test_onecycle_cycles_the_lr_and_adam_beta1() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=3e-3, betas=(0.9, 0.99))
    cfg = ScheduleConfig(decay="onecycle", pct_start=0.4, div_factor=10.0, onecycle_moms=[0.95, 0.85])
    scheduler = build_scheduler(optimizer, cfg, 50)
    for step in range(50):
        lr_factor, beta1 = onecycle_reference(step, 50, 0.4, 10.0, (0.95, 0.85))
        group = optimizer.param_groups[0]
        assert group["lr"] == pytest.approx(3e-3 * lr_factor, rel=1e-12)
        assert group["betas"][0] == pytest.approx(beta1, rel=1e-12) and group["betas"][1] == 0.99
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 / 10 / 1e4, rel=1e-9)  # the end of the cycle


def test_scheduler_applies_curve_to_every_param_group_and_resumes_from_its_step() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.05}], lr=0.5)
    sched = build_scheduler(opt, ScheduleConfig(warmup_steps=2, decay="linear"), 6)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [[0.5 * reference(s, 2, 6, "linear", 0.0), 0.05 * reference(s, 2, 6, "linear", 0.0)] for s in range(4)]
    assert [x for row in seen for x in row] == pytest.approx([x for row in expected for x in row])
    # A fresh scheduler loaded from the state dict continues the curve (its state is the step count alone).
    state = sched.state_dict()
    assert "curve" not in state
    opt2 = torch.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.05}], lr=0.5)
    sched2 = build_scheduler(opt2, ScheduleConfig(warmup_steps=2, decay="linear"), 6)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    factor = reference(4, 2, 6, "linear", 0.0)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.5 * factor, 0.05 * factor])


def test_warmup_from_a_start_lr_is_openpcdets_cosine_warmup() -> None:
    # OpenPCDet's CosineWarmupLR, re-expressed: update t (0-based) of a T-step warmup uses
    # eta_min + (base - eta_min) * (1 - cos(pi * t / T)) / 2, with eta_min = LR / DIV_FACTOR.

    base, div, warm = 3e-3, 10.0, 8
    cfg = ScheduleConfig(
        warmup_steps=warm, warmup="cosine", warmup_starts_at_zero=True, warmup_start_lr=base / div, decay="constant"
    )
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=base)
    sched = build_scheduler(opt, cfg, 40, peak_lr=base)
    eta = base / div
    for t in range(12):
        expected = eta + (base - eta) * (1 - math.cos(math.pi * t / warm)) / 2 if t < warm else base
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12), t
        opt.step()
        sched.step()


def test_linear_warmup_from_a_start_lr() -> None:
    # Hand-computed: from 1e-3 to 1e-2 over 4 updates, update k (1-based) at start + (peak - start) * k / 4.
    cfg = ScheduleConfig(warmup_steps=4, warmup_start_lr=1e-3, decay="constant")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1e-2)
    sched = build_scheduler(opt, cfg, 10, peak_lr=1e-2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([3.25e-3, 5.5e-3, 7.75e-3, 1e-2, 1e-2, 1e-2], rel=1e-12)
