"""Why a run ends before its plan: early stopping on ``eval.best_metric`` and the wall-clock budget ``train.max_time``.

The loop asks one question, :meth:`RunStopping.should_stop`, inside ``Trainer.budget_spent`` (after every optimizer
step, and at epoch boundaries); the answer ends the epoch at that step boundary, the loop evaluates and writes
``last.pt`` as at the end of a ``train.max_steps`` budget, and ``status.json`` records ``early_stopped`` or
``time_budget`` with the reason. Both counters live in :class:`TrainState`, so a resumed run continues them: an
early-stopped run stops again at once unless the config now allows more (a larger patience or budget).

Nothing here reads the device: early stopping sees the metrics the evaluation already brought to the host, the budget
reads ``time.monotonic()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

from trainwell.config.training import EarlyStopConfig
from trainwell.engine import distributed as D
from trainwell.engine.checkpoint.state import TrainState
from trainwell.engine.logging import format_value


def monotonic_s() -> float:
    """The budget's clock (``time.monotonic``: never goes back, no device sync)."""
    return time.monotonic()


def improves_by(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by at least ``min_delta`` (absolute) in the direction of ``mode``; strictly
    when ``min_delta`` is 0. The first value always counts; NaN never does."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    gain = best - value if mode == "min" else value - best
    return gain > 0 and gain >= min_delta


class EarlyStopping:
    """Counts evaluations without an improvement of ``eval.best_metric`` (``BestTracker.update`` reports each value)."""

    def __init__(self, cfg: EarlyStopConfig, mode: str, state: TrainState) -> None:
        self.cfg, self.mode, self.state = cfg, mode, state
        self.last_eval_step: int | None = None
        """The step of this process's last evaluation (to not evaluate that step twice when stopping)."""

    def observe(self, value: float, step: int) -> None:
        """Record the ``eval.best_metric`` value of the evaluation at ``step``."""
        self.last_eval_step = step
        if improves_by(value, self.state.early_stop_best, self.mode, self.cfg.min_delta):
            self.state.early_stop_best, self.state.evals_without_improvement = value, 0
        else:
            self.state.evals_without_improvement += 1

    def reset(self) -> None:
        """Forget the count (the best rule changed on resume)."""
        self.state.early_stop_best, self.state.evals_without_improvement = None, 0

    def should_stop(self) -> bool:
        return self.state.evals_without_improvement >= self.cfg.patience

    def describe(self, rule: str | None) -> str:
        best = self.state.early_stop_best
        return (
            f"eval.early_stop: {rule} did not improve by at least {self.cfg.min_delta:g} in "
            f"{self.state.evals_without_improvement} evaluation(s) in a row (patience {self.cfg.patience}; best "
            f"{format_value(best) if best is not None else 'none'})"
        )


class TimeBudget:
    """``train.max_time``: wall-clock seconds summed over resumes in ``TrainState.elapsed_s``.

    The clock starts when the run begins to be built (``trainwell train``'s start, before the datasets and the model).
    With several processes, rank 0's clock decides, every ``check_every`` steps (the logging interval: the processes
    meet there anyway), so they all stop at the same step.
    """

    def __init__(
        self,
        max_time_s: float | None,
        state: TrainState,
        env: D.DistEnv,
        check_every: int,
        started_s: float | None = None,
    ) -> None:
        """``started_s``: ``time.monotonic()`` when the run began to be built (default: now)."""
        self.max_time_s, self.state, self.env = max_time_s, state, env
        self.check_every = max(1, check_every) if env.is_distributed else 1
        self._last_tick = monotonic_s() if started_s is None else started_s
        self._first: tuple[float, int] | None = None  # (time, step) of this process's first check
        self._decided: tuple[int, bool] | None = None  # (step, answer): one decision (one collective) per step

    def tick(self) -> float:
        """Add the time since the last tick to ``elapsed_s``; returns now."""
        now = monotonic_s()
        self.state.elapsed_s += now - self._last_tick
        self._last_tick = now
        return now

    def should_stop(self, step: int) -> bool:
        """Whether the next optimizer step(s) would pass the budget, predicted from this process's mean step time."""
        now = self.tick()
        if self.max_time_s is None:
            return False
        if self._first is None:
            self._first = (now, step)
        if self._decided is not None and self._decided[0] == step:
            return self._decided[1]
        if step % self.check_every != 0:
            return False
        over = self.state.elapsed_s + self._mean_step_s(now, step) * self.check_every >= self.max_time_s
        over = bool(D.broadcast_object(over, self.env))  # rank 0's clock; no-op with one process
        self._decided = (step, over)
        return over

    def _mean_step_s(self, now: float, step: int) -> float:
        """This process's mean step time (evaluations and checkpoints included); before its first step, the whole
        run's (``elapsed_s / step``: a resumed run that used its budget stops at once)."""
        assert self._first is not None
        first_time, first_step = self._first
        if step > first_step:
            return (now - first_time) / (step - first_step)
        return self.state.elapsed_s / step if step > 0 else 0.0


class RunStopping:
    """The early-stop and time-budget decisions, sticky once made, with the reason ``status.json`` records."""

    def __init__(
        self,
        early_stop: EarlyStopping | None,
        budget: TimeBudget,
        *,
        rule: str | None,
        log: Callable[[str], None],
    ) -> None:
        self.early_stop, self.budget, self.rule, self.log = early_stop, budget, rule, log
        self.reason: Literal["early_stopped", "time_budget"] | None = None
        """``early_stopped`` or ``time_budget`` once decided."""
        self.message = ""
        self._first_step: int | None = None

    def should_stop(self, step: int) -> bool:
        """Whether the run stops at this step boundary (rank-consistent: the metrics and rank 0's clock decide)."""
        if self._first_step is None:
            self._first_step = step
        if self.reason is not None:
            return True
        if self.early_stop is not None and self.early_stop.should_stop():
            self.reason, self.message = "early_stopped", self.early_stop.describe(self.rule)
        elif self.budget.should_stop(step):
            elapsed, limit = self.budget.state.elapsed_s, self.budget.max_time_s
            self.reason = "time_budget"
            self.message = f"train.max_time: {elapsed:.0f} s of {limit:.0f} s used; the next step would pass it"
        else:
            return False
        already = step == self._first_step and step > 0
        hint = "eval.early_stop.patience" if self.reason == "early_stopped" else "train.max_time"
        suffix = f" — the checkpoint had already stopped; raise {hint} to continue" if already else ""
        self.log(f"Stopping at step {step}: {self.message}{suffix}.")
        return True

    def evaluated_at(self, step: int) -> bool:
        """Whether early stopping saw an evaluation at ``step`` (the stop follows it: no second evaluation)."""
        return self.early_stop is not None and self.early_stop.last_eval_step == step

    def details(self) -> dict[str, Any]:
        """What ``status.json`` adds to the state: the reason, in words."""
        return {"reason": self.message} if self.reason else {}
