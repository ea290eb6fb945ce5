"""Epoch-fraction intervals and task batch samplers on 2 gloo processes: intervals resolved from the per-process
loader length, and every sample of a bucketing sampler's epoch taken exactly once over all ranks."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main
from trainwell.engine.data import TrainBatches
from trainwell.engine.distributed import DistEnv

sys.path.insert(0, str(REPO / "tests" / "integration"))
from port_tasks import BucketTask

from trainwell.records.metrics import read_metrics

CONFIG = str(REPO / "configs/examples/regression.yaml")
SMALL = ["data.train_size=96", "data.val_size=16", "train.epochs=2", "task.dropout=0", "train.progress_bar=off"]


def _train(rank: int, world_size: int, run_dir: Path, batch: int) -> None:
    extra = ["train.log_every=0.5ep", "eval.every=0.5ep", f"train.batch_size={batch}"]
    assert main(["train", CONFIG, f"run.dir={run_dir}", *SMALL, *extra]) == 0


def test_fraction_intervals_follow_the_loader_at_one_and_two_processes(tmp_path: Path) -> None:
    # 96 samples, batch 8: one process has 12 steps per epoch; two processes with batch 8 each have 6.
    _train(0, 1, tmp_path / "w1", 8)
    spawn(_train, 2, tmp_path / "w2", 8, init_group=False)
    for name, expected in (("w1", [6, 12, 18, 24]), ("w2", [3, 6, 9, 12])):
        records = read_metrics(tmp_path / name / "metrics.jsonl")
        assert [r["step"] for r in records if r["kind"] == "train"] == expected, name
        assert [r["step"] for r in records if r["kind"] == "val"] == expected, name
    assert "0.5ep = every 3 of 6 steps per epoch" in (tmp_path / "w2" / "train.log").read_text()


def test_a_bucketing_batch_sampler_is_dealt_exactly_once_over_the_ranks() -> None:
    task = BucketTask(BucketTask.Config(hidden=4), BucketTask.DataConfig(train_size=101, val_size=4))
    dataset = task.build_datasets()[0]
    for world in (1, 2, 3):
        for epoch in (0, 1):
            plan = task.build_batch_sampler(dataset, 8, epoch, 0)
            usable = len(plan) - len(plan) % world
            seen: list[int] = []
            lengths = set()
            for rank in range(world):
                batches = TrainBatches(
                    101,
                    batch_size=8,
                    seed=0,
                    env=DistEnv(rank, world, rank),
                    plan=lambda e: task.build_batch_sampler(dataset, 8, e, 0),
                )
                mine = batches.batches(epoch)
                lengths.add(len(mine))
                seen += [i for b in mine for i in b]
                # every batch is one bucket: all of its samples share the sign of x[0]
                assert all(len({bool(dataset[i]["x"][0] > 0) for i in b}) == 1 for b in mine)
            assert len(lengths) == 1  # the same number of steps on every rank (or DDP hangs)
            expected = sorted(i for b in plan[:usable] for i in b)
            assert sorted(seen) == expected and len(seen) == len(set(seen))  # each planned sample once
            dropped = sum(len(b) for b in plan[usable:])
            assert len(seen) + dropped == 101
    assert not torch.equal(
        torch.tensor(task.build_batch_sampler(dataset, 8, 0, 0)[0]),
        torch.tensor(task.build_batch_sampler(dataset, 8, 1, 0)[0]),
    )
