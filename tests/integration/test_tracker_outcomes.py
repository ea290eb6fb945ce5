"""How a tracker run ends (docs/trackers.md): a run that ended as planned (``finished``, ``early_stopped``) closes its
tracker runs as succeeded, one stopped by a signal or a non-finite loss as failed; ``log.trackers`` without
``tensorboard`` writes no ``tb/``. Through the Python API with a recording tracker (no tracker package needed)."""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from small_run import CONFIG, SMALL, SignalAtStep

from trainwell import Trainer, build_run, build_task, load_config


class RecordingTracker:
    """A :class:`~trainwell.engine.trackers.Tracker` that remembers what it was told."""

    name = "recording"

    def __init__(self) -> None:
        self.started = 0
        self.scalars: dict[int, dict[str, float]] = {}
        self.finished: list[tuple[dict[str, float], int, bool]] = []

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        self.started += 1
        return "run-1"

    def stored_points(self) -> set[tuple[str, int]] | None:
        return None

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.scalars.setdefault(step, {}).update(scalars)

    def finish(self, summary: Mapping[str, float], *, step: int, succeeded: bool) -> None:
        self.finished.append((dict(summary), step, succeeded))


CASES = {
    "finished": ([], (), True),
    # No evaluation improves by 100: the second one stops the run.
    "early_stopped": (["eval.every=2", "eval.early_stop.patience=1", "eval.early_stop.min_delta=100"], (), True),
    "stopped_by_signal": ([], (SignalAtStep(3, signal.SIGTERM),), False),
    "nonfinite_stop": (["task.class_path=fault_tasks:NaNRegressionTask", "train.clip_grad_norm=null"], (), False),
}


@pytest.mark.parametrize("state", list(CASES))
def test_the_tracker_run_ends_as_the_run_ended(state: str, tmp_path: Path) -> None:
    overrides, callbacks, succeeded = CASES[state]
    cfg = load_config(CONFIG, [*SMALL, f"run.dir={tmp_path}", "log.trackers=[]", *overrides])
    tracker = RecordingTracker()
    run = build_run(cfg, build_task(cfg), trackers=[tracker], callbacks=callbacks)
    try:
        Trainer(run).fit()
    except Exception as err:  # the signal stop and the non-finite stop end fit() with their exceptions
        assert not succeeded, err
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == state
    assert tracker.started == 1 and len(tracker.finished) == 1
    summary, step, ok = tracker.finished[0]
    assert ok is succeeded and step == status["step"]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = sorted(r["step"] for r in logged if r["kind"] == "train")
    assert sorted(s for s, v in tracker.scalars.items() if "Train/loss" in v) == train_steps
    val = [r for r in logged if r["kind"] == "val"]
    if succeeded:  # the final and best metrics of the validation records
        assert summary["final/mse"] == pytest.approx(val[-1]["mse"])
        assert summary["best/value"] == pytest.approx(min(r["mse"] for r in val))
    assert not (tmp_path / "tb").exists()  # tensorboard not in log.trackers
