"""Exactly-once evaluation: every validation sample scored once, on all processes, verified.

Each process scores a contiguous shard (no padding, so no sample is counted twice), without any
collective inside the loop. The per-sample results, keyed by dataset index, are then gathered on
rank 0, which checks that the indices are exactly ``0 … N-1`` once each before computing metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainwell.engine.distributed import DistEnv, broadcast_object, shard_range
from trainwell.engine.task import Evaluator, Task
from trainwell.engine.tensors import move_to_device


class CoverageError(RuntimeError):
    """The gathered evaluation results do not cover the dataset exactly once."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics over the whole dataset and how many samples / processes produced them."""

    metrics: dict[str, float]
    num_samples: int
    world_size: int


def verify_coverage(indices: torch.Tensor, num_samples: int) -> None:
    """Raise :class:`CoverageError` unless ``indices`` hold ``0 … num_samples-1`` exactly once each."""
    counts = torch.bincount(indices.clamp(0, num_samples), minlength=num_samples + 1)
    out_of_range = int(((indices < 0) | (indices >= num_samples)).sum())
    missing = int((counts[:num_samples] == 0).sum())
    duplicated = int((counts[:num_samples] > 1).sum())
    if missing or duplicated or out_of_range:
        example_missing = torch.nonzero(counts[:num_samples] == 0).flatten()[:5].tolist()
        example_dup = torch.nonzero(counts[:num_samples] > 1).flatten()[:5].tolist()
        raise CoverageError(
            f"Evaluation did not see every sample exactly once: {missing} of {num_samples} samples missing "
            f"(e.g. {example_missing}), {duplicated} duplicated (e.g. {example_dup}), {out_of_range} out of "
            f"range. The metrics would be wrong, so none are reported. Check the dataset's __len__ and "
            f"that eval_step passes `indices` to the evaluator unchanged."
        )


def gather_results(
    indices: torch.Tensor, results: dict[str, torch.Tensor], env: DistEnv
) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Collect every process's per-sample results on rank 0 (``None`` elsewhere), sorted by index.

    ``gather_object`` sends each shard to rank 0 only, so memory on rank 0 grows with the number of
    samples, not with the number of processes. Shards may differ in size.
    """
    local = (indices.cpu(), {k: v.cpu() for k, v in results.items()})
    if env.is_distributed:
        shards: list[Any] | None = [None] * env.world_size if env.is_main else None
        dist.gather_object(local, shards, dst=0)
        if not env.is_main:
            return None
        assert shards is not None
    else:
        shards = [local]
    all_indices = torch.cat([s[0] for s in shards])
    order = torch.argsort(all_indices, stable=True)
    merged = {k: torch.cat([s[1][k] for s in shards])[order] for k in local[1]}
    return all_indices[order], merged


def evaluate(
    *,
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    evaluator: Evaluator,
    batch_size: int,
    device: torch.device,
    env: DistEnv,
    autocast: Callable[[], Any],
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score ``dataset`` exactly once across all processes; every process gets the metrics.

    ``model`` must be the bare module (not DDP-wrapped): a DDP forward would run collectives inside
    the loop, and shards of different sizes would then deadlock.
    """
    num_samples = len(dataset)  # type: ignore[arg-type]
    shard = shard_range(num_samples, env)
    batches = [list(shard[i : i + batch_size]) for i in range(0, len(shard), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=task.collate_fn())
    was_training = model.training
    model.eval()
    evaluator.reset()
    with torch.no_grad(), autocast():
        for batch_indices, batch in zip(batches, loader, strict=True):
            indices = torch.tensor(batch_indices, dtype=torch.int64, device=device)
            task.eval_step(model, move_to_device(batch, device), indices, evaluator)
    model.train(was_training)

    local_indices, local_results = evaluator.local_results()
    gathered = gather_results(local_indices, local_results, env)
    metrics: dict[str, float] | None = None
    error: str | None = None
    if gathered is not None:
        all_indices, all_results = gathered
        try:
            verify_coverage(all_indices, num_samples)
            evaluator.load_results(all_indices, all_results)
            metrics = evaluator.compute()
        except (CoverageError, ValueError) as err:
            error = str(err)
    # Every process learns the outcome, so all of them stop together on an error.
    metrics, error = broadcast_object((metrics, error), env)  # type: ignore[misc]
    if error is not None:
        raise CoverageError(error)
    assert metrics is not None
    if log is not None:
        log(f"Evaluated on {num_samples} samples from all {env.world_size} processes")
    return EvalResult(metrics=metrics, num_samples=num_samples, world_size=env.world_size)
