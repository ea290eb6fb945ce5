"""The ``checkpoint:`` section, and the check every interval key shares (``train.log_every``, ``eval.every``,
``checkpoint.every``, ``checkpoint.latest_every``: optimizer steps or epochs such as ``"0.2ep"``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Problem = tuple[str, str]
"""``(key, what is wrong)`` for a value out of range (as in ``schema``)."""


def interval_problem(key: str, value: int | str | None) -> Iterator[Problem]:
    """What is wrong with an interval value (``500`` steps, ``"0.2ep"``), if anything."""
    if value is None:
        return
    if isinstance(value, int):
        if value < 0:
            yield key, "must be ≥ 0 steps, or epochs such as '0.2ep'"
        return
    text = value.strip()
    number = text[:-2] if text.endswith("ep") else None
    try:
        ok = number is not None and float(number) >= 0
    except ValueError:
        ok = False
    if not ok:
        yield key, f"must be a number of steps (500) or of epochs ('1ep', '0.2ep'), not {value!r}"


@dataclass
class CheckpointConfig:
    """``checkpoint:`` — what is written to ``<run>/checkpoints``."""

    every_epochs: int = 1
    """Write ``epoch_NNNN.pt`` every this many epochs; 0 = never."""
    every: int | str | None = None
    """Periodic checkpoints every N optimizer steps (``step_NNNNNNNN.pt``) or ``"2ep"`` (``epoch_NNNN.pt``);
    when set it replaces ``every_epochs`` (OpenPCDet's ckpt_save_interval)."""
    keep: int | str = 3
    """Newest periodic checkpoints kept, or ``all``; 0 = write none (``best.pt`` and ``last.pt`` are never
    rotated away). OpenPCDet's max_ckpt_save_num."""
    keep_best: int = 0
    """Also keep the k best checkpoints by ``eval.best_metric`` as ``best_step_NNNNNNNN_<metric>_<value>.pt`` (links
    to the checkpoint of that evaluation; the worst is deleted when a better one arrives); 0: only ``best.pt``."""
    latest_every_steps: int = 0
    """Also write ``last.pt`` every this many optimizer steps inside an epoch; 0 = only at epoch end."""
    latest_every: int | str | None = None
    """``last.pt`` every N steps or ``"0.2ep"`` (ViECap's latest.pt every ⅕ epoch); replaces latest_every_steps."""
    every_minutes: float | None = None
    """Also write ``last.pt`` when this many minutes of wall-clock time have passed since the run's last checkpoint
    (OpenPCDet's ``--ckpt_save_time_interval`` in seconds / 60). Checked at logging steps, where the processes
    already synchronise, so a save can come up to ``train.log_every`` steps after the time is up. null = off."""

    format: Literal["auto", "single", "sharded"] = "auto"
    """``single``: one file per checkpoint, written by rank 0. ``sharded``: a directory (``last.dcp/``…) in which
    every process writes its shards (``torch.distributed.checkpoint``). ``auto``: sharded under FSDP, else single."""
    async_save: bool = False
    """Sharded checkpoints only: write the shards in the background (``dcp.async_save``); training goes on while
    they are written, and a checkpoint is published (renamed into place) once complete."""

    def in_shards(self, strategy: str) -> bool:
        """Whether checkpoints are sharded directories under ``distributed.strategy`` = ``strategy``."""
        return self.format == "sharded" or (self.format == "auto" and strategy == "fsdp")

    @property
    def keep_count(self) -> int | None:
        """``keep`` as a number; ``None`` = keep all."""
        return None if self.keep == "all" else int(self.keep)

    def problems(self) -> Iterator[Problem]:
        if not (self.keep == "all" or (isinstance(self.keep, int) and self.keep >= 0)):
            yield "checkpoint.keep", "must be ≥ 0 or 'all'"
        if self.every_epochs < 0:
            yield "checkpoint.every_epochs", "must be ≥ 0"
        if self.keep_best < 0:
            yield "checkpoint.keep_best", "must be ≥ 0"
        if self.latest_every_steps < 0:
            yield "checkpoint.latest_every_steps", "must be ≥ 0"
        yield from interval_problem("checkpoint.every", self.every)
        yield from interval_problem("checkpoint.latest_every", self.latest_every)
        minutes = self.every_minutes
        if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
            yield "checkpoint.every_minutes", "must be a positive number of minutes (or null)"
