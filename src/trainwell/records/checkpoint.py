"""A checkpoint's top level: the parts' states and what travels with them (``checkpoints/*.pt``, ``torch.save``d
dicts loaded with ``weights_only=True``)."""

from __future__ import annotations

from typing import Any, TypedDict

CHECKPOINT_FORMAT = 2
"""2: ``train_state`` holds the position, best value, last metrics and data layout; ``meters`` the loss meters. Format
1 (no ``format`` key, trainwell 0.1 before the engine redesign) is converted on load."""


class CheckpointMeta(TypedDict, total=False):
    """The keys of a checkpoint. Each part's value is that part's own ``state_dict()``."""

    format: int
    model: dict[str, Any]
    """The bare module's state dict (no DDP ``module.`` prefix)."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    """Empty when the run did not use fp16."""
    train_state: dict[str, Any]
    """``TrainState``'s fields: ``epoch``, ``global_step``, ``batch_in_epoch``, ``best_*``, ``last_metrics``,
    ``data_layout``, ``elapsed_s``."""
    meters: dict[str, Any]
    ema: dict[str, Any]
    """Only under ``train.ema``."""
    task: dict[str, Any]
    """Only for a task with state of its own."""
    rng: dict[str, Any]
    """Every process's RNG streams."""
    config: dict[str, Any]
    """The resolved config (resume checks, ``export``)."""
    versions: dict[str, str]
    """Library versions that wrote it (``trainwell``, ``torch``, …)."""
    checksum: str
    """sha256 over everything else (``engine/checkpoint/files.py``): a damaged file is refused, never loaded."""
