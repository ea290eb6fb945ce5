"""The language of ``eval.best_metric``: a small, safe expression over metric names, e.g. ``(mpjpe + pa_mpjpe) / 2``.

It lives with the config because the config vets it at load time; the engine and the report evaluate it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max}


class BestMetricError(ValueError):
    """``eval.best_metric`` names a metric the task's evaluator does not report."""


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
        assert isinstance(node.value, int | float)  # parse_metric_expression admits numeric constants only
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
