"""Learning-rate (and momentum) schedules as pure functions of the optimizer step (nanoGPT style).

Where does the learning rate change? :meth:`CurveScheduler.step`, called by ``engine.step.optimizer_step``
after every *applied* optimizer step (and every skipped one under ``schedule.step_on_skipped``); the value is
:func:`lr_factor` of the step count. ``step`` below always
counts completed optimizer steps, so ``lr_factor(0)`` is the factor of the first update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from trainwell.config.schema import ScheduleConfig


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


@dataclass(frozen=True)
class Curve:
    """A schedule resolved for one run: the config plus the step counts it needs."""

    cfg: ScheduleConfig
    total_steps: int
    milestones: tuple[int, ...] = ()
    """``step`` decay milestones in optimizer steps (resolved from epochs by the caller)."""
    warmup_start: float = 0.0
    """The warmup's first factor (``schedule.warmup_start_lr / optim.lr``; 0: from zero)."""

    def lr_factor(self, step: int) -> float:
        """Multiplier of each group's peak LR for the update after ``step`` completed steps."""
        cfg = self.cfg
        if cfg.decay == "onecycle":
            return self._onecycle(step)[0]
        warmup = cfg.warmup_steps
        if step < warmup:
            done = step if cfg.warmup_starts_at_zero else step + 1
            pct = done / warmup
            rise = pct if cfg.warmup == "linear" else _cos_anneal(0.0, 1.0, pct)
            return self.warmup_start + (1.0 - self.warmup_start) * rise
        if cfg.decay == "constant":
            return 1.0
        if cfg.decay == "step":
            passed = sum(step >= m for m in self.milestones)
            return max(cfg.min_lr_ratio, cfg.step_factor**passed)
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        shape = 1.0 - progress if cfg.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    def momentum(self, step: int) -> float | None:
        """β1 (Adam) or momentum (SGD) for the update after ``step`` steps; ``None``: leave it alone."""
        return self._onecycle(step)[1] if self.cfg.decay == "onecycle" else None

    def _onecycle(self, step: int) -> tuple[float, float]:
        """OpenPCDet's ``OneCycle``: two cosine phases for the LR (up, then down) and the momentum (down, up)."""
        cfg = self.cfg
        low = 1.0 / cfg.div_factor
        peak_step = int(cfg.pct_start * self.total_steps)
        high_mom, low_mom = cfg.onecycle_moms
        if step < peak_step:
            pct = step / max(1, peak_step)
            return _cos_anneal(low, 1.0, pct), _cos_anneal(high_mom, low_mom, pct)
        pct = min(1.0, (step - peak_step) / max(1, self.total_steps - peak_step))
        return _cos_anneal(1.0, low / 1e4, pct), _cos_anneal(low_mom, high_mom, pct)


class CurveScheduler(LRScheduler):
    """Sets every param group's LR to ``base_lr × curve.lr_factor(step)`` (and β1/momentum for onecycle).

    Its state is the step count (``last_epoch``) alone: the curve is rebuilt from the config on resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, curve: Curve) -> None:
        self.curve = curve
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        step = self.last_epoch  # completed optimizer steps (LRScheduler's own counter)
        momentum = self.curve.momentum(step)
        if momentum is not None:
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (momentum, *tuple(group["betas"])[1:])
                elif "momentum" in group:
                    group["momentum"] = momentum
        factor = self.curve.lr_factor(step)
        return [float(base) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "curve"}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    total_steps: int,
    milestones: tuple[int, ...] = (),
    *,
    peak_lr: float | None = None,
) -> CurveScheduler:
    """The ``schedule:`` curve over ``total_steps``; step it once per applied optimizer step (and per skipped one
    under ``schedule.step_on_skipped``). ``peak_lr`` (``optim.lr``) scales ``schedule.warmup_start_lr``."""
    start = 0.0
    if cfg.warmup_start_lr is not None:
        peak = peak_lr if peak_lr is not None else float(optimizer.param_groups[0]["lr"])
        start = cfg.warmup_start_lr / peak if peak > 0 else 0.0
    return CurveScheduler(optimizer, Curve(cfg, total_steps, milestones, warmup_start=start))
