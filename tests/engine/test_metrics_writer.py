"""metrics.jsonl and TensorBoard hold the same values under the documented tags."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainwell.engine.logging import MetricsWriter
from trainwell.records.metrics import read_metrics


def test_one_record_lands_in_jsonl_and_tensorboard(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, enabled=True)
    writer.write("train", 1, 10, {"loss": 1.5, "loss/mse": 1.25, "lr/backbone": 1e-4, "flag": True}, "Train")
    writer.write("train", 1, 20, {"loss": 0.5, "loss/mse": 0.25, "lr/backbone": 2e-4}, "Train")
    writer.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[0] == {
        "kind": "train",
        "epoch": 1,
        "step": 10,
        "loss": 1.5,
        "loss/mse": 1.25,
        "lr/backbone": 1e-4,
        "flag": True,
    }
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["Train/loss", "Train/loss/mse", "Train/lr/backbone"]  # no bool
    mse = events.Scalars("Train/loss/mse")
    assert [(e.step, e.value) for e in mse] == [(10, 1.25), (20, 0.25)]
    assert [e.value for e in events.Scalars("Train/lr/backbone")] == pytest.approx([1e-4, 2e-4])
