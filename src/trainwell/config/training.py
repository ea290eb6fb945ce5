"""Typed keys for averaging, profiling and ending a run early: ``train.ema``, ``train.profile``, ``train.max_time``,
``eval.early_stop``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

Problem = tuple[str, str]
"""``(key, what is wrong)`` for a value out of range (as in ``schema``)."""


@dataclass
class EmaConfig:
    """``train.ema:`` — an exponential moving average of the model's weights (null or absent: off).

    After every ``every`` optimizer steps from ``start_step``: ``ema = decay·ema + (1 − decay)·w`` for every
    floating parameter. Buffers (BatchNorm running statistics, counters) are copied from the model, not averaged.
    """

    decay: float = 0.999
    """Weight of the old average in each update, in [0, 1)."""
    every: int = 1
    """Optimizer steps between updates."""
    start_step: int = 0
    """The average starts as a copy of the weights after this many optimizer steps (0: the initial weights)."""
    warmup: bool = False
    """Decay warm-up (TensorFlow's ``ExponentialMovingAverage(num_updates=…)``): update n (1, 2, …) uses
    ``min(decay, (1 + n) / (10 + n))``, so early averages forget the first weights faster. Off: ``decay`` always."""

    def problems(self) -> Iterator[Problem]:
        if not 0.0 <= self.decay < 1.0:
            yield "train.ema.decay", "must be in [0, 1)"
        if self.every < 1:
            yield "train.ema.every", "must be at least 1"
        if self.start_step < 0:
            yield "train.ema.start_step", "must be ≥ 0"


_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration_s(text: str | int | float) -> float:
    """Seconds in a duration: ``"2h30m"``, ``"45m"``, ``"90s"``, ``"1h5m30s"`` or a bare number of seconds.

    Raises:
        ValueError: for anything else, or a zero duration.
    """
    match = _DURATION.match(str(text).strip().lower())
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"must be a duration such as '2h30m', '45m', '90s' (or seconds), not {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    seconds = parts.get("h", 0.0) * 3600 + parts.get("m", 0.0) * 60 + parts.get("s", 0.0)
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, not {text!r}")
    return seconds


@dataclass
class EarlyStopConfig:
    """``eval.early_stop:`` — stop when ``eval.best_metric`` stops improving (null or absent: never)."""

    patience: int = 5
    """Evaluations in a row without an improvement of at least ``min_delta`` after which the run stops."""
    min_delta: float = 0.0
    """Smallest change that counts as an improvement, absolute, in the direction of ``eval.best_mode``
    (0: any strict improvement)."""

    def problems(self) -> Iterator[Problem]:
        if self.patience < 1:
            yield "eval.early_stop.patience", "must be at least 1"
        if self.min_delta < 0:
            yield "eval.early_stop.min_delta", "must be ≥ 0 (it is absolute, in the direction of eval.best_mode)"


@dataclass
class ProfileConfig:
    """``train.profile:`` — record ``torch.profiler`` for a few optimizer steps (null or absent: off).

    The first ``wait`` steps of this process are skipped, ``warmup`` more are profiled and thrown away (the first
    steps of a profile carry its own start-up cost), then ``active`` steps are recorded into ``<run>/profile/``: a
    TensorBoard trace (``*.pt.trace.json``, the profiler plugin's format) and ``trace.json`` for chrome://tracing or
    Perfetto; the top operators by self time are printed in the log.
    """

    wait: int = 5
    """Steps skipped before profiling starts."""
    warmup: int = 2
    """Steps profiled but not recorded."""
    active: int = 5
    """Steps recorded."""

    def problems(self) -> Iterator[Problem]:
        if self.wait < 0:
            yield "train.profile.wait", "must be ≥ 0"
        if self.warmup < 0:
            yield "train.profile.warmup", "must be ≥ 0"
        if self.active < 1:
            yield "train.profile.active", "must be at least 1"
