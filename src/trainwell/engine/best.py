"""Best-model selection: a small, safe expression over metric names, e.g. ``(mpjpe + pa_mpjpe) / 2``."""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainwell.engine.checkpoint.state import TrainState

if TYPE_CHECKING:
    from trainwell.engine.stopping import EarlyStopping

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max}


@dataclass(frozen=True)
class MetricExpression:
    """A parsed ``eval.best_metric``; evaluate it on a ``{name: value}`` dict."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def __call__(self, metrics: Mapping[str, float]) -> float:
        missing = sorted(self.names - set(metrics))
        if missing:
            raise BestMetricError(  # a task without metric_names(): found at the first evaluation, not before
                f"eval.best_metric '{self.text}' uses {', '.join(missing)}, which the evaluator does not "
                f"report; available metrics: {', '.join(sorted(metrics))}. Set eval.best_metric to one of them "
                f"(a task's metric_names() lets trainwell check this before training starts)."
            )
        return float(_evaluate(self.tree, metrics))


def _evaluate(node: ast.expr, metrics: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(metrics[node.id])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, metrics)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, metrics), _evaluate(node.right, metrics))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(_evaluate(a, metrics) for a in node.args))
    raise AssertionError(f"unexpected node {ast.dump(node)}")  # parse_metric_expression rejects it


class BestMetricError(ValueError):
    """``eval.best_metric`` names a metric the task's evaluator does not report."""


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


def parse_metric_expression(text: str) -> MetricExpression:
    """Parse and vet ``text``: numbers, metric names, + - * /, parentheses, min() and max() only.

    Raises:
        ValueError: naming what is not allowed.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"'{text}' is not a valid expression ({err.msg}).") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in _FUNCTIONS:
                names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise ValueError(f"'{text}': only numeric constants are allowed.")
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS) or node.keywords:
                raise ValueError(f"'{text}': only min(...) and max(...) may be called.")
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise ValueError(f"'{text}': only + - * / are allowed.")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
                raise ValueError(f"'{text}': only unary minus is allowed.")
        elif not isinstance(node, ast.expr_context | ast.Load | ast.operator | ast.unaryop):
            raise ValueError(f"'{text}': '{type(node).__name__}' is not allowed in a metric expression.")
    if not names:
        raise ValueError(f"'{text}' names no metric.")
    return MetricExpression(text=text, tree=tree, names=frozenset(names))


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (``None`` = nothing yet); NaN never improves."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


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
