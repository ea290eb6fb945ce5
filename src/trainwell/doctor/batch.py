"""The doctor's checks on the first training batches and on the model's mode flags (host-side, cheap)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainwell.doctor.findings import Finding
from trainwell.engine.tensors import iter_tensors


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor of a batch."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    mean: float
    std: float
    num_nan: int
    num_inf: int


@torch.no_grad()
def batch_tensor_stats(batch: Any) -> list[TensorStats]:
    """Shape, dtype, range, mean/std and NaN/Inf counts of every tensor (one host read per batch)."""
    named = [(n, t) for n, t in iter_tensors(batch) if t.numel() > 0]
    if not named:
        return []
    rows = []
    for _, t in named:
        x = t.detach().double()
        finite = torch.isfinite(x)
        clean = torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))
        count = finite.sum().clamp_min(1)
        mean = clean.sum() / count
        std = torch.sqrt(((clean - mean) * finite).square().sum() / count)
        big = torch.tensor(math.inf, dtype=x.dtype, device=x.device)
        rows.append(
            torch.stack(
                [
                    torch.where(finite, x, big).min(),
                    torch.where(finite, x, -big).max(),
                    mean,
                    std,
                    torch.isnan(x).sum().double(),
                    torch.isinf(x).sum().double(),
                ]
            ).cpu()
        )
    values = torch.stack(rows).tolist()  # host read: first batches only
    return [
        TensorStats(n, tuple(t.shape), str(t.dtype).replace("torch.", ""), v[0], v[1], v[2], v[3], int(v[4]), int(v[5]))
        for (n, t), v in zip(named, values, strict=True)
    ]


def format_batch_report(stats: Sequence[Sequence[TensorStats]]) -> list[str]:
    """A table of the first batches: one row per tensor (ranges over all batches, shape of the first)."""
    if not stats or not stats[0]:
        return []
    rows: dict[str, list[TensorStats]] = {}
    for batch in stats:
        for s in batch:
            rows.setdefault(s.name, []).append(s)
    width = max(len("tensor"), *(len(name) for name in rows))
    lines = [
        f"First-batch data report ({len(stats)} batch{'es' if len(stats) > 1 else ''}):",
        f"  {'tensor':<{width}}  {'shape':<16} {'dtype':<8} {'min':>10} {'max':>10} {'mean':>10} {'std':>10} nan/inf",
    ]
    for name, items in rows.items():
        lo, hi = min(s.min for s in items), max(s.max for s in items)
        mean, std = statistics.fmean(s.mean for s in items), statistics.fmean(s.std for s in items)
        bad = sum(s.num_nan for s in items), sum(s.num_inf for s in items)
        shape = "×".join(str(d) for d in items[0].shape) or "scalar"
        lines.append(
            f"  {name:<{width}}  {shape:<16} {items[0].dtype:<8} {lo:>10.4g} {hi:>10.4g} {mean:>10.4g} "
            f"{std:>10.4g} {bad[0]}/{bad[1]}"
        )
    return lines


def check_batch_values(stats: Sequence[TensorStats], batch_index: int) -> list[Finding]:
    """``data.nonfinite``: NaN or Inf inside a training batch."""
    bad = [s for s in stats if s.num_nan or s.num_inf]
    if not bad:
        return []
    shown = "; ".join(f"'{s.name}' {s.shape}: {s.num_nan} NaN, {s.num_inf} Inf" for s in bad)
    return [
        Finding(
            "data.nonfinite",
            "error",
            "Training batches contain NaN or Inf values",
            f"batch {batch_index + 1} of epoch 1: {shown}",
            "Find the samples (dataset __getitem__ with the indices of this batch) and fix the source: missing "
            "annotations stored as NaN, divisions by a zero scale or depth, log of 0. Mask missing values explicitly.",
            None,
        )
    ]


# -- the model ----------------------------------------------------------------------------------------
MODE_SENSITIVE: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
"""Modules that compute differently in train and eval mode."""


def check_train_mode(model: nn.Module, step: int) -> Finding | None:
    """``model.eval_mode``: Dropout / BatchNorm modules (or the model) in eval mode during training."""
    sensitive = [(name, m) for name, m in model.named_modules() if isinstance(m, MODE_SENSITIVE)]
    frozen = [(name, m) for name, m in sensitive if not m.training]
    if model.training and not frozen:
        return None
    examples = ", ".join(f"'{name or type(model).__name__}' ({type(m).__name__})" for name, m in frozen[:3])
    whole = not model.training
    evidence = f"at step {step}, between training steps: model.training={model.training}"
    if sensitive:
        evidence += f"; {len(frozen)} of {len(sensitive)} Dropout/BatchNorm modules in eval mode"
        evidence += f" (e.g. {examples})" if examples else ""
    return Finding(
        "model.eval_mode",
        "error" if whole else "warning",
        "The model is in eval mode during training" if whole else "Some Dropout/BatchNorm modules are in eval mode",
        evidence,
        "Dropout is off and BatchNorm uses (and stops updating) its running statistics in eval mode. Find the "
        "`.eval()` call outside evaluation — often in compute_losses, a helper that runs the model for a "
        "metric, or a callback — and restore `.train()` after it, or run that code under torch.no_grad() "
        "without switching modes. Frozen BatchNorm on purpose? Add 'model.eval_mode' to diagnostics.ignore.",
        step,
    )


def _tensors_and_size(batch: Any) -> tuple[list[torch.Tensor], int | None]:
    """The tensors of a dict, tuple or list batch and their shared first dimension (``None``: no such batch)."""
    values = list(batch.values()) if isinstance(batch, Mapping) else batch if isinstance(batch, list | tuple) else []
    if not values or not all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
        return [], None
    sizes = {v.shape[0] for v in values}
    return values, sizes.pop() if len(sizes) == 1 else None


def batch_halves(batch: Any) -> list[Any]:
    """The two halves of a batch — a dict, tuple or list of tensors sharing a first dimension ≥ 2 — else none."""
    values, size = _tensors_and_size(batch)
    if size is None or size < 2:
        return []
    half = size // 2
    if isinstance(batch, Mapping):
        return [{k: v[:half] for k, v in batch.items()}, {k: v[half:] for k, v in batch.items()}]
    return [type(batch)(v[:half] for v in values), type(batch)(v[half:] for v in values)]


def batch_size_of(batch: Any) -> int | None:
    """The shared first dimension of a dict, tuple or list batch of tensors (``None``: no such batch)."""
    return _tensors_and_size(batch)[1]
