"""Training on 2 gloo processes with per-process batch B/2 equals training on one process with batch B.

Both runs go through the CLI's ``main`` (the spawned processes get the variables torchrun would set),
so this also covers process-group creation from the environment, DDP wrapping, rank-0-only outputs and
loss values averaged over ranks in the log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main
from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig

CONFIG = str(REPO / "configs/examples/regression.yaml")
GLOBAL_BATCH = 32
# Dropout 0: masks are drawn per rank, so with dropout the runs would differ by design.
COMMON = ["train.epochs=1", "train.max_steps=6", "train.log_every=2", "task.dropout=0", "train.device=cpu"]


def _train_in_process(rank: int, world_size: int, run_dir: Path) -> None:
    batch = GLOBAL_BATCH // world_size
    assert main(["train", CONFIG, f"run.dir={run_dir}", f"train.batch_size={batch}", *COMMON]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    one, two = tmp_path_factory.mktemp("w1"), tmp_path_factory.mktemp("w2")
    _train_in_process(0, 1, one)
    spawn(_train_in_process, 2, two, init_group=False)
    return {1: one, 2: two}


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_two_processes_reach_the_same_weights(runs: dict[int, Path]) -> None:
    one = torch.load(runs[1] / "checkpoints/last.pt", weights_only=True)
    two = torch.load(runs[2] / "checkpoints/last.pt", weights_only=True)
    assert one["train_state"]["global_step"] == two["train_state"]["global_step"] == 6
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # ... and the weights did move (six AdamW steps at lr ~3e-3), so the comparison means something.
    torch.manual_seed(0)  # what the Trainer does (train.seed=0) before building the model
    initial = RegressionTask(RegressionTaskConfig(hidden=64), RegressionDataConfig()).build_model().state_dict()
    moved = max(float((one["model"][name] - value).abs().max()) for name, value in initial.items())
    assert moved > 1e-3


def test_logged_losses_are_the_mean_over_ranks(runs: dict[int, Path]) -> None:
    # Each rank's half-batch mean, averaged over the 2 ranks, is the one-process full-batch mean.
    one, two = _records(runs[1], "train"), _records(runs[2], "train")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4, 6]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "loss/mse", "loss/l1", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key


def test_validation_metrics_match(runs: dict[int, Path]) -> None:
    (one,), (two,) = _records(runs[1], "val"), _records(runs[2], "val")
    assert one["num_samples"] == two["num_samples"] == 101
    assert two["mse"] == pytest.approx(one["mse"], rel=1e-5)


def test_rank_zero_alone_writes(runs: dict[int, Path]) -> None:
    log = (runs[2] / "train.log").read_text()
    assert log.count("trainwell run 'regression'") == 1
    assert "batch: 16 per process × 2 process(es) × 1 accumulation = global batch 32" in log
    assert log.count("Evaluated on 101 samples from all 2 processes") == 1
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())
