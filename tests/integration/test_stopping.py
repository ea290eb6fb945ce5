"""``eval.early_stop`` and ``train.max_time`` through the real ``trainwell train``: where the run stops, what
``status.json`` says, and what a resumed run does."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import pytest
from small_run import CONFIG, train

from trainwell.cli import main
from trainwell.engine import loop, stopping
from trainwell.engine.checkpoint import LAST, load_checkpoint

EARLY = ["train.grad_accum_steps=1", "train.epochs=2", "eval.every=2", "eval.best_metric=mse"]


def status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


def val_records(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["mse"]) for r in map(json.loads, lines) if r["kind"] == "val"]


def expected_stop(values: list[tuple[int, float]], patience: int, min_delta: float) -> int | None:
    """The definition, on the logged values: the step of the ``patience``-th evaluation in a row that did not lower
    the best mse so far by at least ``min_delta``."""
    best, bad = math.inf, 0
    for step, value in values:
        if best - value >= min_delta and value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad == patience:
                return step
    return None


def test_early_stop_stops_after_patience_evaluations_and_resumes_by_the_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rule = ["eval.early_stop.patience=2", "eval.early_stop.min_delta=0.05"]
    assert train(run_dir, *EARLY, *rule) == 0
    values = val_records(run_dir)
    stop = expected_stop(values, patience=2, min_delta=0.05)
    assert stop is not None and stop < 24  # the plan has 24 steps: it stopped early
    assert status(run_dir)["state"] == "early_stopped" and status(run_dir)["step"] == stop
    assert "did not improve by at least 0.05 in 2 evaluation(s)" in status(run_dir)["reason"]
    assert [step for step, _ in values] == list(range(2, stop + 1, 2))  # each step scored once, none after
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]["global_step"] == stop

    # The same config: it had already stopped, and says so; nothing trains, nothing is scored again.
    assert train(run_dir, *EARLY, *rule, "--resume", "auto") == 0
    assert status(run_dir)["state"] == "early_stopped" and status(run_dir)["step"] == stop
    assert val_records(run_dir) == values
    assert "the checkpoint had already stopped; raise eval.early_stop.patience" in (run_dir / "train.log").read_text()

    # A larger patience continues, with the count kept (the definition applied to the whole log agrees).
    assert (
        train(run_dir, *EARLY, "eval.early_stop.patience=5", "eval.early_stop.min_delta=0.05", "--resume", "auto") == 0
    )
    resumed = val_records(run_dir)
    assert resumed[: len(values)] == values and len(resumed) > len(values)
    end = expected_stop(resumed, patience=5, min_delta=0.05)
    final = status(run_dir)
    # The plan's end wins a tie: a count reaching the patience at the last step is a finished run.
    stopped_early = end is not None and end < 24
    assert (final["state"], final["step"]) == (("early_stopped", end) if stopped_early else ("finished", 24))


def test_early_stop_needs_a_best_metric(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", CONFIG, "eval.best_metric=null", "eval.early_stop.patience=2"]) == 2
    err = capsys.readouterr().err
    assert "'eval.early_stop'" in err and "needs eval.best_metric" in err


class TenSecondSteps:
    """A clock for the engine's time budget in which every optimizer step takes exactly 10 s (and nothing else does)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        real = loop.optimizer_step

        def timed_step(**kwargs: Any) -> None:
            self.now += 10.0
            real(**kwargs)

        monkeypatch.setattr(loop, "optimizer_step", timed_step)
        monkeypatch.setattr(stopping, "time", types.SimpleNamespace(monotonic=lambda: self.now))


def test_time_budget_stops_before_it_and_counts_the_time_of_every_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    TenSecondSteps(monkeypatch)
    run_dir = tmp_path / "run"
    # 18 steps planned. At step k 10·k s are used and a step takes 10 s: 95 s allow 9 steps (a 10th would end at 100).
    assert train(run_dir, "train.max_time=95s") == 0
    assert status(run_dir)["state"] == "time_budget" and status(run_dir)["step"] == 9
    assert status(run_dir)["reason"].startswith("train.max_time: 90 s of 95 s used; the next step would pass it")
    saved = load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]
    assert saved["global_step"] == 9 and saved["elapsed_s"] == 90.0

    assert train(run_dir, "train.max_time=95s", "--resume", "auto") == 0  # the budget is used: no step
    assert status(run_dir)["step"] == 9
    assert "the checkpoint had already stopped; raise train.max_time" in (run_dir / "train.log").read_text()

    # 155 s in all: 6 more steps (not 15: the first run's 90 s count).
    assert train(run_dir, "train.max_time=2m35s", "--resume", "auto") == 0
    assert status(run_dir)["state"] == "time_budget" and status(run_dir)["step"] == 15
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]["elapsed_s"] == 150.0


def test_max_time_must_be_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", CONFIG, "train.max_time=2 hours"]) == 2
    assert "train.max_time" in capsys.readouterr().err
