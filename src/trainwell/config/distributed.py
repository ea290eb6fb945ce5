"""Typed keys of the ``distributed:`` section: the process group, and how the model is spread over processes
(``strategy: ddp | fsdp``, with ``fsdp:`` options). See ``docs/distributed.md``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Problem = tuple[str, str]
"""``(key, what is wrong)`` for a value out of range (as in ``schema``)."""


@dataclass
class FsdpConfig:
    """``distributed.fsdp:`` — FSDP2 (``torch.distributed.fsdp.fully_shard``) options; used under ``strategy: fsdp``."""

    units: list[str] | None = None
    """Module-name glob patterns (``fnmatch`` on ``model.named_modules()`` names, e.g. ``["blocks.*"]``): each
    matching module is sharded as one unit (its parameters are gathered together), then the root. ``null``: the
    task's ``shard_units(model)`` if it has one, else every direct child that has parameters."""
    reshard_after_forward: bool = True
    """Free the gathered parameters after each unit's forward (less memory, one more all-gather in backward)."""
    cpu_offload: bool = False
    """FSDP2's ``CPUOffloadPolicy``: parameter shards, gradients and the optimizer state live in host memory and the
    optimizer steps on the CPU; each unit's shards are copied to the GPU for its all-gather. For models whose
    sharded state still does not fit in GPU memory; costs host↔GPU copies every step (no effect on a CPU run)."""

    def problems(self) -> Iterator[Problem]:
        for i, pattern in enumerate(self.units or []):
            if not pattern.strip():
                yield f"distributed.fsdp.units[{i}]", "must be a non-empty module-name pattern"


@dataclass
class DistributedConfig:
    """``distributed:`` — multi-process training under torchrun (ignored for one process)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """``auto``: NCCL on CUDA, gloo on CPU."""
    timeout_s: float = 600.0
    """A collective that waits longer than this ends the job with an error instead of a hang."""
    find_unused_parameters: bool = False
    """DDP option for models whose forward skips some parameters."""
    sync_batchnorm: bool = False
    """Convert BatchNorm layers to SyncBatchNorm."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """``ddp``: every process holds the whole model and optimizer state, gradients are all-reduced.
    ``fsdp``: parameters, gradients and optimizer state are sharded over the processes (FSDP2 ``fully_shard``)."""
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)

    def problems(self) -> Iterator[Problem]:
        if self.timeout_s <= 0:
            yield "distributed.timeout_s", "must be > 0"
        yield from self.fsdp.problems()


def combination_problems(strategy: str, sharded: bool, amp: str, ema: Any, checkpoint: Any) -> Iterator[Problem]:
    """What ``strategy: fsdp`` and sharded checkpoints do not combine with (yet)."""
    if strategy == "fsdp" and amp == "fp16":
        # GradScaler's inf check would see only this process's gradient shard: processes could disagree on a skip.
        yield "train.amp", "fp16 is not supported with distributed.strategy=fsdp: use train.amp=bf16 (no loss scaling)"
    if strategy == "fsdp" and ema is not None:
        yield "train.ema", "is not supported with distributed.strategy=fsdp yet: set train.ema=null or strategy=ddp"
    if checkpoint.async_save and not sharded:
        yield "checkpoint.async_save", "needs sharded checkpoints (checkpoint.format=sharded, or auto under fsdp)"
