"""Learning-rate schedules as pure functions of the optimizer step (nanoGPT style)."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, decay: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR after ``step`` optimizer steps.

    Linear warmup from 0 (exclusive) to 1 over ``warmup_steps``, then ``decay`` from 1 down to
    ``min_lr_ratio`` at ``total_steps``: ``linear``, ``cosine`` (half cosine) or ``constant``.
    ``step`` counts completed optimizer steps, so step 0 is the LR of the first update.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if decay == "linear":
        shape = 1.0 - progress
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"schedule.decay must be linear, cosine or constant, not {decay!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, decay: str, min_lr_ratio: float
) -> LambdaLR:
    """A ``LambdaLR`` over :func:`lr_factor`; step it once per *applied* optimizer step."""
    curve = partial(
        lr_factor, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, min_lr_ratio=min_lr_ratio
    )
    return LambdaLR(optimizer, lr_lambda=curve)
