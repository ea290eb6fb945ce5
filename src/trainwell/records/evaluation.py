"""What ``trainwell eval --out`` / ``trainwell test --out`` writes: one checkpoint scored once on one split."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

from trainwell.records.jsonl import check_version

EVAL_OUTPUT_VERSION = 1
"""1: the ``version`` field (0: the same object without it)."""


class EvalOutput(TypedDict):
    version: int
    split: Literal["val", "test"]
    num_samples: int
    """Samples scored, each exactly once, over all processes."""
    world_size: int
    metrics: dict[str, float]
    checkpoint: str
    outputs: list[str]
    """Prediction files written (``--export``)."""
    findings: list[dict[str, Any]]
    """What the evaluator noticed (``Finding.to_dict()``), e.g. a metric it could not compute and why."""


def eval_output(
    *,
    split: Literal["val", "test"],
    num_samples: int,
    world_size: int,
    metrics: Mapping[str, float],
    checkpoint: str,
    outputs: Sequence[str],
    findings: Sequence[Mapping[str, Any]],
) -> EvalOutput:
    return EvalOutput(
        version=EVAL_OUTPUT_VERSION,
        split=split,
        num_samples=num_samples,
        world_size=world_size,
        metrics=dict(metrics),
        checkpoint=checkpoint,
        outputs=list(outputs),
        findings=[dict(f) for f in findings],
    )


def read_eval_output(path: Path) -> EvalOutput:
    """Read an ``--out`` file back.

    Raises:
        RecordVersionError: written by a newer trainwell.
        ValueError: not an eval output (the message names the file).
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "metrics" not in data:
        raise ValueError(f"'{path}' is not the output of trainwell eval --out (no 'metrics' in it)")
    check_version(data.get("version"), EVAL_OUTPUT_VERSION, path)
    return data  # type: ignore[return-value]
