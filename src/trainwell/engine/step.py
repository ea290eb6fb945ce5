"""The optimizer step, in the order that is easy to get wrong:

unscale (fp16) → measure + clip the total grad norm → optimizer.step (through the scaler) →
scheduler.step *only if the optimizer really stepped* → zero_grad(set_to_none=True).
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from trainwell.engine.fsdp import full_value
from trainwell.engine.meters import StepStats


def total_grad_norm(model: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients together, on the device (no sync).

    Under FSDP each process holds a shard of every gradient (DTensors): the norm of the shards' norms is reduced
    over the processes (one small all-reduce), so every process gets the norm of the whole gradient.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return full_value(torch.nn.utils.get_total_norm(grads, norm_type=2.0))


def _unscale_and_measure(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip_grad_norm: float | None,
    norm_wanted: bool,
) -> torch.Tensor | None:
    """The total grad norm before clipping, on the device (no sync), or ``None`` when nobody needs it.

    Unscaling comes first so that clipping and the measured norm see the true gradients (comparable across
    precisions); clipping measures the norm anyway, otherwise the norm's kernels run only when ``norm_wanted``.
    """
    if scaler.is_enabled():
        scaler.unscale_(optimizer)  # clip and measure true gradients, not scaled ones
    if clip_grad_norm is not None:
        # clip_grad_norm_'s two halves, with the norm made global in between (FSDP: a norm over shards).
        norm = total_grad_norm(model)
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), clip_grad_norm, norm)
        return norm
    if norm_wanted:
        return total_grad_norm(model)
    return None


def _update_parameters(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, stats: StepStats) -> bool:
    """``optimizer.step`` (through the scaler under fp16); whether the parameters were really updated.

    fp16 only: a skipped step shows as a smaller scale after update(). The scale before is the one read after the
    previous step (it changes only in update()), so only one host read per step remains.
    """
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale_before = stats.scale if stats.scale is not None else scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    stats.scale = scaler.get_scale()  # host sync (fp16 only)
    return stats.scale >= scale_before


def _advance_schedule(scheduler: LRScheduler, applied: bool, step_on_skipped: bool) -> None:
    """By default the schedule counts applied steps only: a skipped fp16 step does not advance the LR."""
    if applied:
        scheduler.step()
    elif step_on_skipped:
        with warnings.catch_warnings():
            # A skipped first step is a scheduler step before any optimizer.step(), on purpose: not PyTorch's
            # "wrong order" mistake that its warning is about.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            scheduler.step()


def optimizer_step(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler,
    clip_grad_norm: float | None,
    stats: StepStats,
    measure_norm: bool,
    skip_nonfinite: bool = False,
    step_on_skipped: bool = False,
) -> bool:
    """Apply one optimizer step; returns whether the parameters were updated.

    The grad norm is measured *before* clipping and after unscaling, so it is comparable across
    precisions. Without clipping it is measured only when ``measure_norm`` (logging steps), which
    keeps the norm's reduction kernels off ordinary steps. ``skip_nonfinite`` (diagnostics.nonfinite=skip)
    measures the norm on every step and skips the update when it is not finite. ``step_on_skipped``
    (schedule.step_on_skipped) advances the schedule on a step GradScaler skipped, as ViECap and OpenPCDet do.
    """
    norm = _unscale_and_measure(model, optimizer, scaler, clip_grad_norm, measure_norm or skip_nonfinite)
    # Host sync on every step, but only under diagnostics.nonfinite=skip: the update must not happen.
    if skip_nonfinite and norm is not None and not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        stats.num_nonfinite += 1
        stats.num_steps += 1
        return False
    if norm is not None and (clip_grad_norm is not None or measure_norm):
        stats.add_norm(norm, clip_grad_norm)
    applied = _update_parameters(optimizer, scaler, stats)
    _advance_schedule(scheduler, applied, step_on_skipped)
    if not applied:
        stats.num_skipped += 1
    optimizer.zero_grad(set_to_none=True)
    stats.num_steps += 1
    return applied
