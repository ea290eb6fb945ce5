"""The non-finite policy (``diagnostics.nonfinite``): what the loop does when a loss or gradient is NaN/Inf.

The loop calls it by name; the doctor only reads what it recorded (:attr:`NonFinitePolicy.finding`).

* ``stop`` (default) — nothing is read per step: the logged interval means (which the loop reads anyway) turn
  NaN/Inf as soon as one micro-batch's loss does, and so does the interval's gradient norm. Only then are the loss
  vectors kept since the previous log line read, to name the first non-finite step and component; that micro-batch
  is re-read from the dataset by index into ``nonfinite_batch.pt`` (with which input tensors, of which samples,
  are themselves non-finite), and :class:`NonFiniteLossError` stops every process. The parameters may have taken
  up to ``train.log_every`` bad updates by then; the run stops anyway.
* ``skip`` — the loop needs the answer before each update, so it pays one host read per micro-batch (and the
  gradient norm is measured every step): a non-finite micro-batch stays out of the loss means and its update is
  skipped. Under fp16 the GradScaler already skips overflowing steps (that is how it calibrates), so ``skip``
  defers to it there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from trainwell.engine.data import TrainBatches
from trainwell.engine.losses import component_name
from trainwell.engine.tensors import iter_tensors
from trainwell.records.findings import Finding

NONFINITE_BATCH_FILE = "nonfinite_batch.pt"


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss or gradient (``diagnostics.nonfinite=stop``)."""

    def __init__(self, message: str, finding: Finding | None = None) -> None:
        super().__init__(message)
        self.finding = finding


@dataclass
class _LossRow:
    values: torch.Tensor  # (K,) on the device, detached
    names: tuple[str, ...]
    epoch: int
    micro: int
    step: int


class NonFinitePolicy:
    """Stop or skip on non-finite values; see the module docstring."""

    def __init__(
        self,
        mode: str,
        *,
        amp: str,
        enabled: bool,
        run_dir: Path | None,
        warn: Callable[[str], None],
        dataset: Dataset[Any],
        batches: TrainBatches,
        collate_fn: Callable[[list[Any]], Any] | None,
    ) -> None:
        self.mode = mode
        self.enabled = enabled
        self.amp = amp
        self.run_dir = run_dir
        self.warn = warn
        self.dataset = dataset
        self.batches = batches
        self.collate_fn = collate_fn
        self.finding: Finding | None = None
        """What happened, for the doctor to report (set when the policy stops the run)."""
        self._recent: list[_LossRow] = []
        self._warned = 0

    @property
    def skips(self) -> bool:
        """``skip`` in effect: skip updates with non-finite gradients (one host read per step)."""
        return self.enabled and self.mode == "skip" and self.amp != "fp16"

    def observe(self, names: tuple[str, ...], stacked: torch.Tensor, *, epoch: int, micro: int, step: int) -> bool:
        """Note one micro-batch's losses ``(K,)``; ``False`` = leave it out of the means (``skip`` only).

        Under ``stop`` this keeps a reference (no kernel, no sync); under ``skip`` it reads one flag.
        """
        if not self.enabled:
            return True
        if not self.skips:
            self._recent.append(_LossRow(stacked, names, epoch, micro, step))
            return True
        finite = torch.isfinite(stacked)
        if bool(finite.all()):  # host sync: the price of diagnostics.nonfinite=skip
            return True
        if self._warned < 5:
            self._warned += 1
            bad = [n for n, ok in zip(names, finite.tolist(), strict=True) if not ok]
            self.warn(
                f"step {step} (epoch {epoch + 1}, batch {micro + 1}): loss component(s) {', '.join(bad)} not finite; "
                "the update is skipped (diagnostics.nonfinite=skip)"
            )
        return False

    def check(self, losses: Sequence[float], grad_norm: float | None, step: int, *, describe: bool) -> None:
        """At a logging step or epoch end, on values already on the host (every process calls it together).

        Raises:
            NonFiniteLossError: under ``stop``, when a loss mean or the gradient norm is not finite.
        """
        grads_bad = grad_norm is not None and not math.isfinite(grad_norm) and self.amp != "fp16"
        if not self.enabled or self.skips or (all(math.isfinite(v) for v in losses) and not grads_bad):
            self._recent.clear()
            return
        finding, path = self._describe(losses, step) if describe else (None, None)
        self.finding = finding
        message = finding.evidence if finding is not None else f"non-finite loss or gradient by step {step}"
        raise NonFiniteLossError(
            f"Training stopped: {message}."
            + (f" The batch is saved in {path}." if path else "")
            + " (diagnostics.nonfinite=stop; `skip` would skip such steps instead.)",
            finding,
        )

    def _describe(self, losses: Sequence[float], step: int) -> tuple[Finding, Path | None]:
        """Name the first non-finite step and component from the kept loss vectors; save that batch."""
        rows = self._recent
        flags = torch.stack([torch.isfinite(r.values).all() for r in rows]).tolist() if rows else []
        bad = next((r for r, ok in zip(rows, flags, strict=True) if not ok), None)
        if bad is None:
            evidence = (
                f"the loss became non-finite on another process by step {step}"
                if not all(math.isfinite(v) for v in losses)
                else f"the gradient norm became non-finite in the log interval ending at step {step} while every "
                "loss component stayed finite"
            )
            fix = (
                "A finite loss with a non-finite gradient points at an operation with an infinite derivative at "
                "the current values (sqrt or norm at 0, acos at ±1, pow with a fractional exponent at 0): add an "
                "epsilon. diagnostics.nonfinite=skip skips such steps."
            )
            return Finding("train.nonfinite", "error", "Non-finite values in training", evidence, fix, step), None
        values = bad.values.tolist()
        names = [component_name(n) for n in bad.names]
        first = next(n for n, v in zip(names, values, strict=True) if not math.isfinite(v))
        shown = ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, values, strict=True))
        path, inputs = self._save_batch(bad)
        evidence = (
            f"the loss became non-finite at step {bad.step} (epoch {bad.epoch + 1}, batch {bad.micro + 1}); "
            f"first non-finite component: '{first}' ({shown}); {inputs}"
        )
        fix = (
            "Look at the saved batch and at how the component is computed: log/sqrt/division at 0, an "
            "unmasked missing label, exp overflow, fp16 overflow. If it happens only after a while, the learning "
            "rate may be too high (see the gradient norm before it). To train through rare bad batches, set "
            "diagnostics.nonfinite=skip."
        )
        title = f"The loss became non-finite (first: '{first}')"
        return Finding("train.nonfinite", "error", title, evidence, fix, bad.step), path

    def _save_batch(self, row: _LossRow) -> tuple[Path | None, str]:
        """Re-read micro-batch ``row`` by index, save it, and say which inputs (if any) are non-finite."""
        payload: dict[str, Any] = {
            "step": row.step,
            "epoch": row.epoch + 1,
            "batch_in_epoch": row.micro + 1,
            "losses": {component_name(n): v for n, v in zip(row.names, row.values.tolist(), strict=True)},
        }
        try:
            indices = self.batches.batch_indices(row.epoch, row.micro)
            items = [self.dataset[i] for i in indices]
            batch = (self.collate_fn or default_collate)(items)
            payload.update(indices=indices, batch=batch)
            payload["note"] = "re-read from the dataset: random augmentations may differ from the trained batch"
            inputs = describe_nonfinite_inputs(batch, indices)
        except Exception as err:  # the finding matters more than the file
            payload["error"] = f"could not re-read the batch: {err!r}"
            inputs = f"the batch could not be re-read ({err!r})"
        if self.run_dir is None:
            return None, inputs
        path = self.run_dir / NONFINITE_BATCH_FILE
        torch.save(payload, path)
        return path, inputs


def describe_nonfinite_inputs(batch: Any, indices: Sequence[int]) -> str:
    """Which input tensors hold NaN/Inf, for which dataset indices — or that every input was finite."""
    bad: list[str] = []
    for key, tensor in iter_tensors(batch):
        if not tensor.is_floating_point() or tensor.dim() == 0:
            continue
        finite = torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
        if not bool(finite.all()) and tensor.shape[0] == len(indices):
            rows = torch.nonzero(~finite).flatten().tolist()
            bad.append(f"'{key}' at dataset indices {[indices[r] for r in rows[:10]]}")
        elif not bool(finite.all()):
            bad.append(f"'{key}'")
    if not bad:
        return "every input tensor of that batch is finite (the model or the loss made the NaN/Inf)"
    return "non-finite inputs: " + "; ".join(bad) + " (fix or filter these samples)"
