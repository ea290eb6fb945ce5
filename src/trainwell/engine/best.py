"""Best-model selection: which evaluation is the best so far, by ``eval.best_metric`` (see config/expressions.py)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from trainwell.config.expressions import BestMetricError, is_better, parse_metric_expression
from trainwell.engine.checkpoint.state import TrainState

if TYPE_CHECKING:
    from trainwell.engine.stopping import EarlyStopping


def check_best_metric(expression: str | None, declared: set[str] | None, task_name: str) -> None:
    """Refuse a ``best_metric`` that uses a name outside ``declared`` (the task's ``metric_names()``), before training.

    Raises:
        BestMetricError: naming each unknown metric, the nearest declared name and the declared names.
    """
    if not expression or declared is None:
        return
    unknown = sorted(parse_metric_expression(expression).names - declared)
    if not unknown:
        return
    hints = []
    for name in unknown:
        near = difflib.get_close_matches(name, sorted(declared), n=1, cutoff=0.5)
        hints.append(f"'{name}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    listed = sorted(n for n in declared if "/" not in n)  # grouped names (kitti/…, mpjpe_joint/…) are many
    grouped = len(declared) - len(listed)
    raise BestMetricError(
        f"Config key 'eval.best_metric' is '{expression}', but {task_name} reports no metric {', '.join(hints)}. "
        f"It reports: {', '.join(listed)}"
        + (f" (and {grouped} grouped names such as '{min(declared - set(listed))}')" if grouped else "")
        + ". Fix eval.best_metric; otherwise the run would fail at its first evaluation."
    )


class BestTracker:
    """Where the best checkpoint is chosen: one place, one rule (``eval.best_metric`` + ``eval.best_mode``).

    It keeps its result in the run's :class:`TrainState` (``best_value``,
    ``best_epoch``, ``best_step``, ``best_rule``), so it is saved and resumed with the run.
    """

    def __init__(
        self, expression: str | None, mode: str, state: TrainState, *, early_stop: EarlyStopping | None = None
    ) -> None:
        self.metric = parse_metric_expression(expression) if expression else None
        self.mode = mode
        self.state = state
        self.rule = f"{expression} ({mode})" if expression else None
        self.early_stop = early_stop
        """``eval.early_stop``: told every value (it counts the evaluations without improvement)."""
        self.scored: tuple[int, float] | None = None
        """``(step, value)`` of the latest evaluation, until the checkpoint written after it takes it (top-k)."""

    def take_scored(self) -> tuple[int, float] | None:
        """The latest evaluation's ``(step, value)`` once (``checkpoint.keep_best`` ranks that checkpoint)."""
        scored, self.scored = self.scored, None
        return scored

    def update(self, metrics: Mapping[str, float], *, epoch: int, step: int) -> bool:
        """Record ``metrics`` if they beat the best so far; ``True`` means write ``best.pt`` now."""
        if self.metric is None:
            return False
        value = self.metric(metrics)
        self.scored = (step, value)
        if self.early_stop is not None:
            self.early_stop.observe(value, step)
        if not is_better(value, self.state.best_value, self.mode):
            return False
        self.state.best_value, self.state.best_epoch, self.state.best_step = value, epoch, step
        self.state.best_rule = self.rule
        return True

    def rule_changed(self) -> str | None:
        """After a resume: why the saved best no longer counts (the rule changed), else ``None``."""
        saved = self.state.best_rule
        if self.state.best_value is None or saved == self.rule:
            return None
        self.state.best_value = self.state.best_epoch = self.state.best_step = None
        if self.early_stop is not None:
            self.early_stop.reset()
        return f"eval.best_metric/best_mode changed from {saved} to {self.rule}: best.pt starts anew."
