"""Exactly-once evaluation: every validation sample scored once, on all processes, verified.

1. Each process scores a contiguous shard of the dataset (:func:`shard_range`: no padding, so no sample
   is counted twice; shard sizes differ by at most one) with the bare model and no collective inside
   the loop — shards of different sizes would otherwise deadlock.
2. The evaluator's per-sample results, keyed by dataset index, are gathered on rank 0 as tensors
   (:func:`trainwell.engine.distributed.gather_rows`: NCCL and gloo alike, memory on rank 0 grows with
   the number of samples only).
   Ragged results (a list of per-sample tensors of any first dimension: the boxes of a frame, the tokens of a
   caption) travel as a per-sample length plus their concatenated rows, and come back as lists.
3. Rank 0 checks that the indices are exactly ``0 … N-1``, once each (:func:`verify_coverage`), hands
   the results, sorted by index, to the evaluator and computes the metrics — the same numbers whatever
   the number of processes — and lets it write its prediction files (``save_outputs``). Any failure is
   raised on every process; no metric is ever reported from a partial or duplicated set.

Batches are collated outside autocast (as in training); only ``eval_step`` runs under it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainwell.engine.distributed import (
    DistEnv,
    broadcast_buffers,
    broadcast_object,
    gather_rows,
    require_same_on_all_ranks,
    shard_range,
)
from trainwell.engine.fsdp import gathered_parameters
from trainwell.engine.logging import ProgressBar
from trainwell.engine.task import Evaluator, PerSample, ReportsFindings, Task, WritesOutputs
from trainwell.engine.tensors import move_to_device

INDEX_KEY = "trainwell/index"
"""Name under which the dataset indices travel with the per-sample results."""


class CoverageError(RuntimeError):
    """The gathered evaluation results do not cover the dataset exactly once."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics over the whole dataset and how many samples / processes produced them."""

    metrics: dict[str, float]
    num_samples: int
    world_size: int
    outputs: list[Path] = field(default_factory=list)
    """Prediction files the evaluator wrote (rank 0)."""
    findings: list[Any] = field(default_factory=list)
    """What the evaluator noticed about the predictions (its ``findings`` after ``compute``: empty or constant
    captions, a head that predicts only background), for the doctor to report (rank 0)."""


def verify_coverage(indices: torch.Tensor, num_samples: int) -> None:
    """Raise :class:`CoverageError` unless ``indices`` hold ``0 … num_samples-1`` exactly once each.

    Args:
        indices: ``(M,)`` integer dataset indices gathered from every process.
        num_samples: ``len(dataset)``.
    """
    indices = indices.flatten().long()
    in_range = (indices >= 0) & (indices < num_samples)
    out_of_range = int((~in_range).sum())
    counts = torch.bincount(indices[in_range], minlength=num_samples)
    missing = torch.nonzero(counts == 0).flatten()
    duplicated = torch.nonzero(counts > 1).flatten()
    if missing.numel() or duplicated.numel() or out_of_range:
        extra = int((counts[duplicated] - 1).sum())
        raise CoverageError(
            f"Evaluation did not see every sample exactly once: {missing.numel()} of {num_samples} samples "
            f"missing (e.g. indices {missing[:5].tolist()}), {duplicated.numel()} duplicated ({extra} extra "
            f"results, e.g. indices {duplicated[:5].tolist()}), {out_of_range} out of range "
            f"(e.g. {indices[~in_range][:5].tolist()}). The metrics would be wrong, so none are reported. "
            f"Check the dataset's __len__ and that eval_step passes `indices` to the evaluator unchanged, "
            f"one result per sample."
        )


def _split_ragged(results: dict[str, PerSample], num: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(dense rows, ragged flat rows)``: each ragged name becomes ``<name>/len`` (N,) and its concatenation."""
    dense: dict[str, torch.Tensor] = {}
    flat: dict[str, torch.Tensor] = {}
    for name, value in results.items():
        if isinstance(value, torch.Tensor):
            dense[name] = value
            continue
        if len(value) != num:
            raise ValueError(f"Ragged result '{name}' has {len(value)} entries for {num} indices; give one per sample.")
        parts = [v.detach().cpu().reshape(1) if v.dim() == 0 else v.detach().cpu() for v in value]
        dense[f"{name}/len"] = torch.tensor([p.shape[0] for p in parts], dtype=torch.int64)
        flat[name] = torch.cat(parts) if parts else torch.empty(0)
    return dense, flat


def gather_results(
    indices: torch.Tensor, results: dict[str, PerSample], env: DistEnv
) -> tuple[torch.Tensor, dict[str, PerSample]] | None:
    """Collect every process's per-sample results on rank 0 (``None`` elsewhere), sorted by index.

    Args:
        indices: ``(n,)`` dataset indices held by this process (``n`` may differ between processes).
        results: ``{name: (n, ...) tensor or list of n tensors}`` in the same order as ``indices``.
    """
    if INDEX_KEY in results:
        raise ValueError(f"Evaluator results may not use the reserved name '{INDEX_KEY}'.")
    indices = indices.reshape(-1).long()
    dense, flat = _split_ragged(results, indices.numel())
    gathered = gather_rows({INDEX_KEY: indices, **dense}, env)
    # Every process runs the same gathers in the same (sorted) order, whether or not it has rows.
    flat_gathered = {name: gather_rows({"rows": flat[name]}, env) for name in sorted(flat)}
    if gathered is None:
        return None
    all_indices = gathered.pop(INDEX_KEY)
    # A stable sort keeps the result order independent of how the samples were sharded.
    order = torch.argsort(all_indices, stable=True)
    lengths_keys = {f"{name}/len" for name in flat}
    out: dict[str, PerSample] = {name: value[order] for name, value in gathered.items() if name not in lengths_keys}
    for name, rows in flat_gathered.items():
        assert rows is not None
        lengths = gathered[f"{name}/len"]
        pieces = list(torch.split(rows["rows"], lengths.tolist()))
        out[name] = [pieces[i] for i in order.tolist()]
    return all_indices[order], out


def _score_shard(
    *,
    task: Task,
    model: nn.Module,
    dataset: Dataset[Any],
    evaluator: Evaluator,
    shard: range,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], Any],
    num_workers: int,
    progress_mode: str,
    show_progress: bool,
) -> None:
    """Run ``eval_step`` over this process's shard (no collectives: shard sizes differ).

    Rank 0's shard is the largest: its bar (``show_progress`` there only) tells when the evaluation ends.
    """
    progress = ProgressBar(
        total=len(shard), description="eval", mode=progress_mode, enabled=show_progress, unit="sample"
    )
    batches = [list(shard[i : i + batch_size]) for i in range(0, len(shard), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=task.collate_fn())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # The loader collates here, outside autocast: a collate_fn that stacks fp16 features must not
            # meet CPU autocast's dtype rules (training collates outside autocast too).
            for batch_indices, batch in zip(batches, loader, strict=True):
                indices = torch.tensor(batch_indices, dtype=torch.int64, device=device)
                with autocast():
                    task.eval_step(model, move_to_device(batch, device), indices, evaluator)
                progress.update(len(batch_indices))
    finally:
        model.train(was_training)
    progress.close()


@dataclass
class _Outcome:
    """What rank 0 made of the gathered results; the defaults on the other ranks and after a failure."""

    metrics: dict[str, float] | None = None
    outputs: list[Path] = field(default_factory=list)
    findings: list[Any] = field(default_factory=list)
    failure: Exception | None = None


def _gather_and_compute(evaluator: Evaluator, num_samples: int, outputs_dir: Path | None, env: DistEnv) -> _Outcome:
    """Gather every process's results on rank 0; there verify coverage, compute the metrics, collect findings and
    write prediction files (elsewhere only the gather).

    A failure is kept, not raised: the other processes are about to wait for the outcome (:func:`_share_outcome`)
    and would hang if rank 0 left without sending it.
    """
    gathered = gather_results(*evaluator.local_results(), env)
    outcome = _Outcome()
    if gathered is None:  # not rank 0
        return outcome
    all_indices, all_results = gathered
    try:
        verify_coverage(all_indices, num_samples)
        evaluator.load_results(all_indices, all_results)
        outcome.metrics = evaluator.compute()
        outcome.findings = list(evaluator.findings) if isinstance(evaluator, ReportsFindings) else []
        if outputs_dir is not None and isinstance(evaluator, WritesOutputs):
            outputs_dir.mkdir(parents=True, exist_ok=True)
            outcome.outputs = list(evaluator.save_outputs(outputs_dir) or [])
    except Exception as err:  # reported to every process by _share_outcome, then re-raised there
        outcome.failure = err
    return outcome


def _share_outcome(outcome: _Outcome, env: DistEnv) -> dict[str, float]:
    """Rank 0's metrics on every process, or the same error raised on every process, so that all stop together.

    Rank 0 re-raises its original exception; the others raise :class:`CoverageError` or a ``RuntimeError`` naming
    it (an exception object need not survive pickling).
    """
    failure = outcome.failure
    message = (outcome.metrics, None if failure is None else (type(failure).__name__, str(failure)))
    metrics: dict[str, float] | None
    metrics, error = broadcast_object(message, env)
    if failure is not None:
        raise failure
    if error is not None:
        kind, text = error
        if kind == CoverageError.__name__:
            raise CoverageError(text)
        raise RuntimeError(f"Evaluation failed on rank 0 with {kind}: {text}")
    assert metrics is not None
    return metrics


def evaluate(
    *,
    task: Task,
    model: nn.Module,
    dataset: Dataset[Any],
    evaluator: Evaluator,
    batch_size: int,
    device: torch.device,
    env: DistEnv,
    autocast: Callable[[], Any],
    num_workers: int = 0,
    log: Callable[[str], None] | None = None,
    progress_mode: str = "auto",
    outputs_dir: Path | None = None,
) -> EvalResult:
    """Score ``dataset`` exactly once across all processes; every process gets the same metrics.

    ``model`` must be the bare module (not DDP-wrapped): a DDP forward would run collectives inside
    the loop, and shards of different sizes would then deadlock. Every process must call this. An FSDP-sharded
    model is gathered whole before the loop (``engine/fsdp.py``), for the same reason.

    Raises:
        CoverageError: the gathered indices are not ``0 … len(dataset)-1`` once each (on every process).
        RuntimeError: computing the metrics failed on rank 0 (the original exception there).
    """
    num_samples = len(dataset)  # type: ignore[arg-type]
    require_same_on_all_ranks(num_samples, "len(validation dataset)", env)
    broadcast_buffers(model, env)  # rank 0's BatchNorm statistics everywhere: the ones the checkpoints hold
    evaluator.reset()
    with gathered_parameters(model):  # FSDP: the whole model on every process first, so no forward gathers
        _score_shard(
            task=task,
            model=model,
            dataset=dataset,
            evaluator=evaluator,
            shard=shard_range(num_samples, env),
            batch_size=batch_size,
            device=device,
            autocast=autocast,
            num_workers=num_workers,
            progress_mode=progress_mode,
            show_progress=env.is_main,
        )
    outcome = _gather_and_compute(evaluator, num_samples, outputs_dir, env)
    metrics = _share_outcome(outcome, env)
    if log is not None:
        log(f"Evaluated on {num_samples} samples from all {env.world_size} processes")
    return EvalResult(
        metrics=metrics,
        num_samples=num_samples,
        world_size=env.world_size,
        outputs=outcome.outputs,
        findings=outcome.findings,
    )
