"""Caption evaluation on 1, 2 and 3 gloo processes: identical scores and counts; a dropped or duplicated sample
fails the coverage check. The validation set has 13 images (divisible by neither 2 nor 3)."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captioning_helpers import small_model_config

from trainwell.engine.distributed import DistEnv, destroy_process_group
from trainwell.engine.evaluation import evaluate
from trainwell.tasks.captioning.evaluator import CaptionEvaluator
from trainwell.tasks.captioning.task import CaptioningDataConfig, CaptioningTask, CaptioningTaskConfig

VAL_SIZE = 13


def make_task() -> CaptioningTask:
    cfg = CaptioningTaskConfig(model=small_model_config(), max_new_tokens=12, meteor=False, spice=False)
    return CaptioningTask(cfg, CaptioningDataConfig(train_size=64, val_size=VAL_SIZE, references_per_image=3, seed=2))


class Faulty(CaptionEvaluator):
    """Drops its last sample, or also reports sample 0, on rank 1."""

    fault = "none"
    rank = 0

    def local_results(self):
        indices, results = super().local_results()
        if self.rank == 1 and self.fault == "drop":
            return indices[:-1], {"tokens": results["tokens"][:-1]}
        if self.rank == 1 and self.fault == "duplicate":
            return torch.cat([indices, indices[:1]]), {"tokens": [*results["tokens"], results["tokens"][0]]}
        return indices, results


def scenario(rank: int, world_size: int, out_dir: Path) -> None:
    task = make_task()
    torch.manual_seed(0)  # the same weights in every process
    model = task.build_model().eval()
    _, val = task.build_datasets()
    outcome: dict[str, Any] = {}
    for fault in ("none", "drop", "duplicate"):
        evaluator = Faulty(task.tokenizer, task.records("val"), width=12, ragged=True)
        evaluator.fault, evaluator.rank = fault, rank
        try:
            result = evaluate(
                task=task,
                model=model,
                dataset=val,
                evaluator=evaluator,
                batch_size=4,
                device=torch.device("cpu"),
                env=DistEnv(rank=rank, world_size=world_size, local_rank=rank),
                autocast=contextlib.nullcontext,
            )
            outcome[fault] = (result.metrics, result.num_samples, evaluator.captions if rank == 0 else None)
        except Exception as error:
            outcome[fault] = f"{type(error).__name__}: {error}"
    torch.save(outcome, out_dir / f"rank{rank}.pt")


def _entry(rank: int, world_size: int, port: int, out_dir: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        scenario(rank, world_size, out_dir)
        # Nobody tears its gloo connections down while a peer still uses them (a peer's background thread would
        # otherwise see the closed socket and abort the process: seen as SIGABRT in CI).
        dist.barrier()
    finally:
        # The engine's teardown collects garbage first: a group held in a reference cycle and destroyed at
        # interpreter shutdown aborts the process after a successful run (SIGABRT in CI, twice).
        destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    found = {}
    for world_size in (1, 2, 3):
        out_dir = tmp_path_factory.mktemp(f"caption_eval{world_size}")
        if world_size == 1:
            scenario(0, 1, out_dir)
        else:
            mp.start_processes(
                _entry, args=(world_size, _free_port(), out_dir), nprocs=world_size, join=True, start_method="spawn"
            )
        found[world_size] = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_scores_and_counts_do_not_depend_on_the_number_of_processes(outcomes: dict, world_size: int) -> None:
    single_metrics, single_count, single_captions = outcomes[1][0]["none"]
    assert single_count == VAL_SIZE and set(single_captions) == set(range(VAL_SIZE))
    for rank, outcome in enumerate(outcomes[world_size]):
        metrics, count, captions = outcome["none"]
        assert metrics == single_metrics and count == VAL_SIZE  # every rank holds rank 0's metrics
        if rank == 0:
            assert captions == single_captions


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("fault", ["drop", "duplicate"])
def test_a_dropped_or_duplicated_caption_fails_coverage_on_every_rank(
    outcomes: dict, world_size: int, fault: str
) -> None:
    for outcome in outcomes[world_size]:
        assert isinstance(outcome[fault], str) and outcome[fault].startswith("CoverageError"), outcome[fault]
