"""``metrics.jsonl``: one line per logged training interval (``kind: train``) and per evaluation (``kind: val``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

from trainwell.records.jsonl import read_versioned

METRICS_FILE = "metrics.jsonl"
METRICS_VERSION = 1
"""1: the schema line, then ``{"kind", "epoch", "step", **values}`` per line (0: the same lines without it)."""

MetricsKind = Literal["train", "val", "resume"]
"""``resume``: a run resumed here, ``dropped_records`` lines after its checkpoint were dropped (logged again)."""
KEY_FIELDS = ("kind", "epoch", "step")
"""The fields every line has; all the others are the line's values (losses, rates, metrics, a checkpoint name)."""


class MetricsLine(TypedDict):
    """The fields every line has. Its values sit beside them at the top level: ``loss``, ``loss/<component>``,
    ``lr/<group>``, ``samples_per_s``, … for ``train``; the task's metrics (and ``num_samples``) for ``val``."""

    kind: MetricsKind
    epoch: int
    """Epoch the line belongs to, counted from 1."""
    step: int
    """Optimizer steps taken when the line was written."""


def metrics_line(kind: MetricsKind, epoch: int, step: int, values: Mapping[str, Any]) -> dict[str, Any]:
    """The line for ``values`` at ``(epoch, step)``.

    Raises:
        ValueError: a value is named like a key field (it would overwrite it).
    """
    clash = sorted(set(values) & set(KEY_FIELDS))
    if clash:
        raise ValueError(f"metrics.jsonl values may not be named {', '.join(clash)} (the line's own fields)")
    return {"kind": kind, "epoch": epoch, "step": step, **values}


def line_values(line: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a line, without its key fields (what TensorBoard and the trackers get)."""
    return {
        name: float(value)
        for name, value in line.items()
        if name not in KEY_FIELDS and isinstance(value, int | float) and not isinstance(value, bool)
    }


def read_metrics(path: Path, kinds: Iterable[str] = ("train", "val")) -> list[dict[str, Any]]:
    """The lines of ``path`` (a ``metrics.jsonl``) of the given kinds, in file order; ``[]`` when it does not exist.

    Raises:
        RecordVersionError: the file was written by a newer trainwell.
    """
    wanted = set(kinds)
    _, lines = read_versioned(path, METRICS_VERSION)
    return [line for line in lines if line.get("kind") in wanted]
