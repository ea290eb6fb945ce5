"""Ragged per-sample results (any number of boxes per frame, any caption length) gathered exactly once by index
on 1, 2 and 3 gloo processes with uneven shards, and handed to the evaluator as lists in index order."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_helpers import spawn

from trainwell.engine.distributed import DistEnv
from trainwell.engine.evaluation import CoverageError, evaluate
from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig

VAL_SIZE = 23  # divisible by neither 2 nor 3


def boxes_of(index: int) -> torch.Tensor:
    """Sample ``index``'s 'detections': ``index % 4`` rows of 7 values (frame 0, 4, 8… have none)."""
    k = index % 4
    return torch.arange(k * 7, dtype=torch.float32).reshape(k, 7) + 1000 * index


class RaggedEvaluator:
    """Keeps per-frame boxes (ragged), token ids (ragged, int64) and one dense score per sample."""

    def __init__(self, drop_last_on_rank: int | None = None, rank: int = 0) -> None:
        self.drop = drop_last_on_rank == rank
        self.reset()

    def reset(self) -> None:
        self.indices: list[int] = []
        self.boxes: list[torch.Tensor] = []
        self.tokens: list[torch.Tensor] = []
        self.loaded: tuple[torch.Tensor, dict[str, Any]] | None = None

    def update(self, indices: torch.Tensor) -> None:
        for i in indices.tolist():
            self.indices.append(i)
            self.boxes.append(boxes_of(i))
            self.tokens.append(torch.arange(i % 5 + 1, dtype=torch.int64) + i)

    def local_results(self) -> tuple[torch.Tensor, dict[str, Any]]:
        n = len(self.indices) - (1 if self.drop and self.indices else 0)
        score = torch.tensor([float(i) for i in self.indices[:n]], dtype=torch.float64)
        return torch.tensor(self.indices[:n], dtype=torch.int64), {
            "boxes": self.boxes[:n],
            "tokens": self.tokens[:n],
            "score": score,
        }

    def load_results(self, indices: torch.Tensor, results: dict[str, Any]) -> None:
        self.loaded = (indices, results)

    def compute(self) -> dict[str, float]:
        assert self.loaded is not None
        indices, results = self.loaded
        assert indices.tolist() == list(range(VAL_SIZE))
        assert isinstance(results["boxes"], list) and isinstance(results["tokens"], list)
        for i, (boxes, tokens) in enumerate(zip(results["boxes"], results["tokens"], strict=True)):
            assert torch.equal(boxes, boxes_of(i)), f"boxes of sample {i}"
            assert tokens.tolist() == [i + t for t in range(i % 5 + 1)]
        assert torch.equal(results["score"], torch.arange(VAL_SIZE, dtype=torch.float64))
        return {
            "num_boxes": float(sum(b.shape[0] for b in results["boxes"])),
            "num_tokens": float(sum(t.numel() for t in results["tokens"])),
        }


class _Task(RegressionTask):
    def eval_step(self, model: Any, batch: Any, indices: torch.Tensor, evaluator: Any) -> None:
        evaluator.update(indices)


def run(rank: int, world_size: int, out_dir: Path) -> None:
    task = _Task(RegressionTaskConfig(hidden=4), RegressionDataConfig(train_size=4, val_size=VAL_SIZE))
    env = DistEnv(rank=rank, world_size=world_size, local_rank=rank)
    kwargs = dict(
        task=task,
        model=task.build_model(),
        dataset=task.build_datasets()[1],
        batch_size=4,
        device=torch.device("cpu"),
        env=env,
        autocast=contextlib.nullcontext,
    )
    outcome: dict[str, Any] = {"metrics": evaluate(evaluator=RaggedEvaluator(), **kwargs).metrics}  # type: ignore[arg-type]
    try:
        evaluate(evaluator=RaggedEvaluator(drop_last_on_rank=world_size - 1, rank=rank), **kwargs)  # type: ignore[arg-type]
        outcome["dropped"] = "no error"
    except CoverageError as err:
        outcome["dropped"] = str(err)
    torch.save(outcome, out_dir / f"rank{rank}.pt")


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ragged_results_are_gathered_exactly_once(tmp_path: Path, world_size: int) -> None:
    if world_size == 1:
        run(0, 1, tmp_path)
    else:
        spawn(run, world_size, tmp_path)
    expected_boxes = sum(i % 4 for i in range(VAL_SIZE))
    expected_tokens = sum(i % 5 + 1 for i in range(VAL_SIZE))
    for rank in range(world_size):
        outcome = torch.load(tmp_path / f"rank{rank}.pt")
        assert outcome["metrics"] == {"num_boxes": float(expected_boxes), "num_tokens": float(expected_tokens)}
        assert "1 of 23 samples missing" in outcome["dropped"]
