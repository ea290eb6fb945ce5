"""Exactly-once evaluation on 1, 2 and 3 gloo processes: same metrics, loud coverage errors, no hangs.

One set of scenarios (:func:`run_scenarios`) runs in every process of a job; its outcomes are saved per
rank and the tests below read them. The validation set has 101 samples: divisible by neither 2 nor 3.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_helpers import spawn
from torch.utils.data import Subset

from trainwell.engine.distributed import DistEnv, gather_rows
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig, SquaredErrorEvaluator

VAL_SIZE = 101
ROWS_PER_RANK = (3, 0, 5)  # rank 1 holds no rows at all


def _task() -> RegressionTask:
    return RegressionTask(RegressionTaskConfig(hidden=16), RegressionDataConfig(train_size=8, val_size=VAL_SIZE))


def _model(task: RegressionTask) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights in every process
    return task.build_model()


def _fault_rank(world_size: int) -> int:
    return min(1, world_size - 1)


class DroppingEvaluator(SquaredErrorEvaluator):
    """Loses the last sample it scored, on one rank."""

    def __init__(self, rank: int, bad_rank: int) -> None:
        super().__init__()
        self.bad = rank == bad_rank

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        indices, results = super().local_results()
        if self.bad:
            return indices[:-1], {k: v[:-1] for k, v in results.items()}
        return indices, results


class DuplicatingEvaluator(SquaredErrorEvaluator):
    """Also reports sample 0 (which rank 0 owns) on one rank, as overlapping shards would."""

    def __init__(self, rank: int, bad_rank: int) -> None:
        super().__init__()
        self.bad = rank == bad_rank

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        indices, results = super().local_results()
        if self.bad:
            return torch.cat([indices, torch.tensor([0])]), {k: torch.cat([v, v[:1]]) for k, v in results.items()}
        return indices, results


class FailingComputeEvaluator(SquaredErrorEvaluator):
    def compute(self) -> dict[str, float]:
        raise ValueError("metric exploded")


def rows_of_rank(rank: int) -> dict[str, torch.Tensor]:
    """Per-sample tensors of several dtypes and shapes; a rank without rows uses a different layout."""
    n = ROWS_PER_RANK[rank]
    if n == 0:
        return {"f64": torch.zeros(0, dtype=torch.float32), "flag": torch.zeros(0, dtype=torch.bool)}
    base = torch.arange(n) + 100 * rank
    return {
        "f64": torch.stack([base / 3.0, -base / 7.0], dim=1).double(),
        "flag": base % 2 == 1,
        "joints": (base.view(n, 1, 1) * 10 + torch.arange(3).view(1, 3, 1)).int(),
        "half": (base / 9.0).half(),
    }


def _evaluate(rank: int, world_size: int, evaluator: Any, num_samples: int = VAL_SIZE) -> EvalResult:
    task = _task()
    lines: list[str] = []
    result = evaluate(
        task=task,
        model=_model(task),
        dataset=Subset(task.build_datasets()[1], range(num_samples)),
        evaluator=evaluator,
        batch_size=16,
        device=torch.device("cpu"),
        env=DistEnv(rank=rank, world_size=world_size, local_rank=rank),
        autocast=contextlib.nullcontext,
        log=lines.append,
    )
    assert lines == [f"Evaluated on {VAL_SIZE} samples from all {world_size} processes"]
    return result


def _error_of(fn: Any) -> str:
    try:
        fn()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def run_scenarios(rank: int, world_size: int, out_dir: Path) -> None:
    """Every scenario, in the same order on every process; outcomes go to ``out_dir/rank<R>.pt``."""
    bad = _fault_rank(world_size)
    outcome: dict[str, Any] = {}
    result = _evaluate(rank, world_size, SquaredErrorEvaluator())
    outcome["metrics"], outcome["world_size"] = result.metrics, result.world_size
    outcome["dropped"] = _error_of(lambda: _evaluate(rank, world_size, DroppingEvaluator(rank, bad)))
    outcome["duplicated"] = _error_of(lambda: _evaluate(rank, world_size, DuplicatingEvaluator(rank, bad)))
    outcome["compute_failure"] = _error_of(lambda: _evaluate(rank, world_size, FailingComputeEvaluator()))
    shorter = VAL_SIZE - (rank == world_size - 1)  # the last rank's dataset lacks a sample
    outcome["length_mismatch"] = _error_of(lambda: _evaluate(rank, world_size, SquaredErrorEvaluator(), shorter))
    env = DistEnv(rank=rank, world_size=world_size, local_rank=rank)
    # chunk_bytes far below one chunk per rank: the gather runs row by row.
    outcome["gathered"] = gather_rows(rows_of_rank(rank), env, chunk_bytes=64)
    mismatched = rows_of_rank(rank)
    if rank == world_size - 1 and ROWS_PER_RANK[rank]:
        mismatched["f64"] = mismatched["f64"].float()
    outcome["mismatch"] = _error_of(lambda: gather_rows(mismatched, env))
    torch.save(outcome, out_dir / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    """``{world_size: [outcome of rank 0, rank 1, …]}`` for 1 (in this process), 2 and 3 processes."""
    found = {}
    for world_size in (1, 2, 3):
        out_dir = tmp_path_factory.mktemp(f"eval{world_size}")
        if world_size == 1:
            run_scenarios(0, 1, out_dir)
        else:
            spawn(run_scenarios, world_size, out_dir)
        found[world_size] = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    return found


def _reference_metrics() -> dict[str, float]:
    """MSE / MAE of the whole validation set in one batch, written independently of the evaluator."""
    task = _task()
    val = task.build_datasets()[1]
    with torch.no_grad():
        pred = _model(task).eval()(val.x).double()
    diff = pred - val.y.double()
    return {"mse": float(diff.pow(2).mean()), "mae": float(diff.abs().mean())}


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_metrics_do_not_depend_on_the_number_of_processes(outcomes: dict, world_size: int) -> None:
    reference = _reference_metrics()
    for outcome in outcomes[world_size]:  # every rank holds the same metrics
        assert outcome["world_size"] == world_size
        assert outcome["metrics"].keys() == reference.keys()
        for name, value in reference.items():
            assert outcome["metrics"][name] == pytest.approx(value, rel=1e-6)
            assert outcome["metrics"][name] == pytest.approx(outcomes[1][0]["metrics"][name], rel=1e-6)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_a_dropped_sample_fails_on_every_rank(outcomes: dict, world_size: int) -> None:
    for outcome in outcomes[world_size]:
        assert outcome["dropped"].startswith("CoverageError: ")
        assert f"1 of {VAL_SIZE} samples missing" in outcome["dropped"]
        assert "0 duplicated" in outcome["dropped"]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_a_duplicated_sample_fails_on_every_rank(outcomes: dict, world_size: int) -> None:
    for outcome in outcomes[world_size]:
        assert outcome["duplicated"].startswith("CoverageError: ")
        assert f"0 of {VAL_SIZE} samples missing" in outcome["duplicated"]
        assert "1 duplicated (1 extra results, e.g. indices [0])" in outcome["duplicated"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_metric_failure_on_rank_0_reaches_every_rank(outcomes: dict, world_size: int) -> None:
    ranks = outcomes[world_size]
    assert ranks[0]["compute_failure"] == "ValueError: metric exploded"
    for outcome in ranks[1:]:
        assert (
            outcome["compute_failure"] == "RuntimeError: Evaluation failed on rank 0 with ValueError: metric exploded"
        )


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_gather_rows_concatenates_in_rank_order(outcomes: dict, world_size: int) -> None:
    ranks = outcomes[world_size]
    assert all(outcome["gathered"] is None for outcome in ranks[1:])
    gathered = ranks[0]["gathered"]
    parts = [rows_of_rank(r) for r in range(world_size) if ROWS_PER_RANK[r]]
    assert gathered.keys() == parts[0].keys()
    for name, value in gathered.items():
        expected = torch.cat([part[name] for part in parts])
        assert value.dtype == expected.dtype and torch.equal(value, expected), name


def test_gather_rows_rejects_different_layouts_everywhere(outcomes: dict) -> None:
    for outcome in outcomes[3]:
        assert outcome["mismatch"].startswith("ValueError: Per-sample results differ between processes")
    assert all(outcome["mismatch"] == "no error" for outcome in outcomes[2])


@pytest.mark.parametrize("world_size", [2, 3])
def test_datasets_of_different_lengths_fail_on_every_rank(outcomes: dict, world_size: int) -> None:
    lengths = [VAL_SIZE] * (world_size - 1) + [VAL_SIZE - 1]
    for outcome in outcomes[world_size]:
        assert outcome["length_mismatch"].startswith(
            f"RuntimeError: len(validation dataset) differs between processes: {lengths}"
        )
