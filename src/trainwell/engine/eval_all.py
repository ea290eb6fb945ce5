"""``trainwell eval --all-checkpoints RUN_DIR [--watch]`` (OpenPCDet's ``test.py --eval_all``): every periodic
checkpoint of a run evaluated exactly once, in step order, each recorded as a ``Val/`` point at its step.

Records go to ``RUN_DIR/eval_all/``: ``metrics.jsonl`` (``{"kind": "val", "epoch", "step", "checkpoint", ...}``) and
TensorBoard (``eval_all/tb``, tags ``Val/<metric>``). A checkpoint already recorded there is not evaluated again, so
the command can be rerun or interrupted. ``last.pt`` and ``best.pt`` are left out: the first is overwritten while the
run trains and the second is a copy of a periodic or last checkpoint. ``--watch`` scans again every
``poll_seconds`` until the run's ``status.json`` says it is no longer running, then scans once more and stops.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainwell.engine import distributed as D
from trainwell.engine.checkpoint import CheckpointError, load_checkpoint
from trainwell.engine.checkpoint.sharded import is_sharded_checkpoint, read_model_weights
from trainwell.engine.checkpoint.weights import model_state_of
from trainwell.engine.evaluation import EvalResult
from trainwell.engine.logging import MetricsWriter
from trainwell.records.metrics import METRICS_FILE, read_metrics
from trainwell.records.status import read_status

EVAL_ALL_DIR = "eval_all"
_PERIODIC = re.compile(r"^(epoch|step)_(\d+)\.(pt|dcp)$")  # single files, or sharded directories


@dataclass(frozen=True)
class Evaluated:
    """One checkpoint's evaluation: where it stood (epoch, optimizer step) and its metrics."""

    checkpoint: str
    epoch: int
    step: int
    metrics: dict[str, float]


def periodic_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """``epoch_NNNN`` / ``step_NNNNNNNN`` checkpoints (``.pt`` files or sharded ``.dcp`` directories) in
    ``checkpoint_dir``, in the order their numbers give."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(m.group(1), int(m.group(2)), p) for p in checkpoint_dir.iterdir() if (m := _PERIODIC.match(p.name))]
    return [p for _, _, p in sorted(found, key=lambda item: (item[0], item[1]))]


def recorded(out_dir: Path) -> set[str]:
    """Names of the checkpoints already evaluated into ``out_dir/metrics.jsonl``."""
    # A torn last line of an interrupted run is not read: that checkpoint is evaluated again.
    return {
        str(line["checkpoint"]) for line in read_metrics(out_dir / METRICS_FILE, kinds=("val",)) if "checkpoint" in line
    }


def evaluate_all(
    run_dir: Path,
    *,
    model: nn.Module,
    evaluate: Callable[[nn.Module], EvalResult],
    env: D.DistEnv,
    log: Callable[[str], None],
    watch: bool = False,
    poll_seconds: float = 30.0,
) -> list[Evaluated]:
    """Evaluate every not yet recorded periodic checkpoint of ``run_dir`` with ``evaluate(model)``, in step order.

    Every process runs the same list (rank 0's listing is broadcast); rank 0 writes the records.
    """
    out_dir = run_dir / EVAL_ALL_DIR
    writer: MetricsWriter | None = None
    if env.is_main:
        out_dir.mkdir(exist_ok=True)
    done: list[Evaluated] = []
    seen = D.broadcast_object(recorded(out_dir) if env.is_main else None, env)
    while True:
        # Read the state before the scan: a run that had ended before it leaves no checkpoint the scan misses.
        running = D.broadcast_object(read_status(run_dir).get("state") == "running" if env.is_main else None, env)
        listing = [p.name for p in periodic_checkpoints(run_dir / "checkpoints")] if env.is_main else None
        pending = [name for name in D.broadcast_object(listing, env) if name not in seen]
        for name in pending:  # epoch_ / step_ numbers grow with the step: file order is step order
            item = _evaluate_one(run_dir / "checkpoints" / name, model, evaluate, log)
            seen.add(name)
            if item is None:
                continue
            done.append(item)
            if env.is_main:
                writer = writer or MetricsWriter(out_dir, enabled=True)
                writer.write("val", item.epoch, item.step, {"checkpoint": name, **item.metrics}, "Val")
        if not (watch and running):
            break
        time.sleep(poll_seconds)
    if writer is not None:
        writer.close()
    return done


def _train_state(payload: dict[str, Any]) -> dict[str, Any]:
    state = payload.get("train_state")
    return state if isinstance(state, dict) else {}


def _evaluate_one(
    path: Path, model: nn.Module, evaluate: Callable[[nn.Module], EvalResult], log: Callable[[str], None]
) -> Evaluated | None:
    """Load ``path``'s weights (checksum verified, strict) into ``model`` and evaluate it; ``None`` if the file went
    away (rotated by ``checkpoint.keep`` while the run trains) — said in the log, never silently."""
    try:
        payload = read_model_weights(path) if is_sharded_checkpoint(path) else load_checkpoint(path)
    except CheckpointError as err:
        log(f"eval-all: {path.name} is not evaluated: {err}")
        return None
    model.load_state_dict(model_state_of(payload, path), strict=True)
    model.eval()
    state = _train_state(payload)
    result = evaluate(model)
    step, epoch = int(state.get("global_step", 0)), int(state.get("epoch", 0))
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    log(f"eval-all: {path.name} (epoch {epoch}, step {step}): {shown}")
    return Evaluated(path.name, epoch, step, dict(result.metrics))
