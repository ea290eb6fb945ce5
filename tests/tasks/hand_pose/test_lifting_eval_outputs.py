"""The lifting task's evaluation writes its predictions (``predictions/joints_rel_mm.json``), as every pack's does:
one row per validation sample, in dataset order, and the val MPJPE recomputed from the file with NumPy equals the
logged one (so the file holds the evaluated predictions, not another model's or another order)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainwell.cli import main
from trainwell.experiment import build_task, load_config
from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/hand_pose/tiny.yaml")
SHORT = [
    "train.epochs=2",
    "data.train_size=256",
    "data.val_size=48",
    "schedule.warmup_steps=0",
    "train.progress_bar=off",
]


@pytest.mark.slow
def test_evaluation_writes_the_evaluated_predictions(tmp_path: Path) -> None:
    assert main(["train", CONFIG, f"run.dir={tmp_path}", *SHORT]) == 0
    rows = json.loads((tmp_path / "predictions" / "joints_rel_mm.json").read_text())
    assert [row["index"] for row in rows] == list(range(48))
    pred = np.array([row["joints_rel_mm"] for row in rows], dtype=np.float64)
    assert pred.shape == (48, 21, 3)
    task = build_task(load_config(CONFIG, [f"run.dir={tmp_path}", *SHORT]))
    _, val_set = task.build_datasets()
    target = np.stack([val_set[i]["joints_rel_mm"].numpy() for i in range(48)]).astype(np.float64)
    # MPJPE with both skeletons moved to their wrist (joint 0), every joint visible in the synthetic val set.
    errors = np.linalg.norm((pred - pred[:, :1]) - (target - target[:, :1]), axis=-1)
    logged = read_metrics(tmp_path / "metrics.jsonl")
    last_val = [r for r in logged if r["kind"] == "val"][-1]
    assert errors.mean() == pytest.approx(last_val["mpjpe"], rel=1e-4)
