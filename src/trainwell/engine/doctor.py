"""The training doctor: the object the loop calls at a few named places, and ``trainwell doctor RUN_DIR``.

Live (:class:`TrainingDoctor`, rank 0 reports):

* ``maybe_inspect_batch`` — the first batches of the first epoch: a tensor report and ``Task.check_batch``;
* ``maybe_debug_losses`` — ``Task.debug_losses`` for the first batches under ``diagnostics.debug_loss``;
* ``observe_losses`` — keeps a reference to each micro-batch's ``(K,)`` loss vector (no kernel, no sync);
* ``watch_update`` — on logging steps only, the size of the optimizer's update ‖Δw‖/‖w‖;
* ``on_train_log`` / ``on_epoch_end`` / ``on_validation`` — the history checks of
  :mod:`trainwell.engine.diagnostics` on values the loop has already read, the model-mode check, and the
  non-finite policy;
* ``finish`` — the end-of-run "Diagnosis" section; every finding is also appended to ``findings.jsonl``.

**Non-finite losses without a per-step sync.** Under ``diagnostics.nonfinite=stop`` (the default) nothing
is read per step: the logged interval means (which the loop reads anyway) turn NaN/Inf as soon as one
micro-batch's loss does, and so does the interval's gradient norm. Only then does the doctor look at the
loss vectors it kept since the previous log line to name the first non-finite step and component, re-reads
that micro-batch from the dataset (the sampler's order is a function of seed and epoch) into
``nonfinite_batch.pt``, and raises :class:`NonFiniteLossError` on every process. The parameters may have
taken up to ``train.log_every`` bad updates by then; the run stops anyway. Under ``skip`` the loop needs the
answer before each update, so it pays one host read per micro-batch (and the gradient norm is measured
every step): a non-finite micro-batch is left out of the loss means and its update is skipped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from trainwell.config.schema import DiagnosticsConfig
from trainwell.doctor.findings import Finding, FindingSet, format_diagnosis, format_finding
from trainwell.engine.diagnostics import (
    RunContext,
    TensorStats,
    Thresholds,
    batch_tensor_stats,
    check_batch_values,
    check_history,
    check_train_mode,
    format_batch_report,
    summarize_history,
)
from trainwell.engine.distributed import DistEnv

FINDINGS_FILE = "findings.jsonl"
NONFINITE_BATCH_FILE = "nonfinite_batch.pt"
DEBUG_LOSS_ENV = "TRAINWELL_DEBUG_LOSS"
UPDATE_PROBE_MAX_ELEMENTS = 1 << 24
"""The update-size probe copies at most this many parameter elements (the first tensors, in order)."""


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN/Inf under ``diagnostics.nonfinite=stop``."""


@dataclass
class _LossRow:
    values: torch.Tensor  # (K,) on the device, detached
    names: tuple[str, ...]
    epoch: int
    micro: int
    step: int


@dataclass
class _DataSource:
    dataset: Dataset
    sampler: Any
    collate_fn: Callable[[Any], Any] | None
    batch_size: int


class TrainingDoctor:
    """Always-on checks during training; see the module docstring for where the loop calls it.

    Args:
        cfg: the ``diagnostics:`` section.
        context: what the history checks need to know about the run.
        env: this process's place in the job (rank 0 reports).
        run_dir: where ``findings.jsonl`` and ``nonfinite_batch.pt`` go (``None``: nowhere).
        log: the run's logger.
        task: the task (``check_batch`` / ``debug_losses``).
    """

    def __init__(
        self,
        cfg: DiagnosticsConfig,
        *,
        context: RunContext,
        env: DistEnv,
        run_dir: Path | None,
        log: logging.Logger,
        task: Any,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.context = context
        self.env = env
        self.reports = cfg.enabled and env.is_main
        self.run_dir = run_dir
        self.log = log
        self.task = task
        self.th = thresholds or Thresholds()
        self.findings = FindingSet(ignore=tuple(cfg.ignore))
        self.records: list[dict[str, Any]] = []
        self.debug_loss = cfg.debug_loss or os.environ.get(DEBUG_LOSS_ENV, "") not in ("", "0")
        self._batch_stats: list[list[TensorStats]] = []
        self._inspecting = True
        self._debugged = 0
        self._recent: list[_LossRow] = []
        self._skip_messages = 0
        self._probe: list[nn.Parameter] | None = None
        self._update_ratio: torch.Tensor | None = None
        self._data: _DataSource | None = None
        self._finished = False
        self._written: dict[str, Finding] = {}  # the version of each finding last written to findings.jsonl

    # -- set-up -----------------------------------------------------------------------------------
    @property
    def skips_nonfinite(self) -> bool:
        """``diagnostics.nonfinite=skip``: skip updates with non-finite gradients (one host read per step).

        Under fp16 the GradScaler already skips those steps (overflows are part of its calibration).
        """
        return self.enabled and self.cfg.nonfinite == "skip" and self.context.amp != "fp16"

    def watch_data(self, dataset: Dataset, sampler: Any, collate_fn: Callable | None, batch_size: int) -> None:
        """Where a non-finite micro-batch can be read again from (to save it)."""
        self._data = _DataSource(dataset, sampler, collate_fn, batch_size)

    def on_fit_start(self, *, resumed: bool) -> None:
        """Before the first step: record the run context; a resumed run picks up its history and findings."""
        self._inspecting = not resumed  # "the first batches" are those of a fresh run
        if not self.reports or self.run_dir is None:
            return
        if resumed:
            self.records = [r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r.get("kind") in ("train", "val")]
            for data in read_jsonl(self.run_dir / FINDINGS_FILE):
                if data.get("kind") == "finding":
                    self.findings.add(Finding.from_dict(data))
                    self._written[data["id"]] = Finding.from_dict(data)
        self._append({"kind": "context", **self.context.__dict__})

    # -- the first batches ------------------------------------------------------------------------
    def maybe_inspect_batch(self, batch: Any, epoch: int, micro: int) -> None:
        """The first ``Thresholds.first_batches`` batches of a fresh run: tensor report and task checks."""
        if not (self.reports and self._inspecting):
            return
        if epoch > 0 or micro >= self.th.first_batches:
            self._flush_batch_report()
            return
        stats = batch_tensor_stats(batch)  # host read: these few batches only
        self._batch_stats.append(stats)
        found = check_batch_values(stats, micro)
        try:
            found += list(self.task.check_batch(batch))
        except Exception as err:  # a broken check must not end the run; say so instead
            self.log.warning(f"doctor: {type(self.task).__name__}.check_batch failed on batch {micro + 1}: {err!r}")
        for finding in found:
            if not isinstance(finding, Finding):
                self.log.warning(f"doctor: check_batch returned {finding!r}, not a Finding; ignored")
                continue
            self._raise(finding)
        if len(self._batch_stats) >= self.th.first_batches:
            self._flush_batch_report()

    def _flush_batch_report(self) -> None:
        if self._inspecting and self._batch_stats:
            for line in format_batch_report(self._batch_stats):
                self.log.info(line)
        self._inspecting = False

    def maybe_debug_losses(self, model: nn.Module, batch: Any) -> None:
        """Under ``diagnostics.debug_loss`` (or TRAINWELL_DEBUG_LOSS=1): loss internals of the first batches.

        The model runs once more on the batch; the RNG streams and the module buffers (BatchNorm running
        statistics) are restored afterwards, so the run trains exactly as it would without the switch.
        """
        if not (self.debug_loss and self.env.is_main and self._debugged < self.th.first_batches):
            return
        self._debugged += 1
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices):
                stats = self.task.debug_losses(model, batch)
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
        if not stats:
            if self._debugged == 1:
                name = type(self.task).__name__
                self.log.info(f"debug_loss: {name} does not implement debug_losses(); nothing to show")
            return
        width = max(len(k) for k in stats)
        self.log.info(f"debug_loss: batch {self._debugged} ({len(stats)} values)")
        for name, value in stats.items():
            self.log.info(f"  {name:<{width}}  {value:.6g}")

    # -- every micro-batch ------------------------------------------------------------------------
    def observe_losses(
        self, names: tuple[str, ...], stacked: torch.Tensor, *, epoch: int, micro: int, step: int
    ) -> bool:
        """Note one micro-batch's losses; ``False`` means "leave it out of the loss means" (``skip`` only).

        Under ``stop`` this keeps a reference (no kernel, no sync); under ``skip`` it reads one flag.
        """
        if not self.enabled:
            return True
        if not self.skips_nonfinite:
            self._recent.append(_LossRow(stacked.detach(), names, epoch, micro, step))
            return True
        finite = torch.isfinite(stacked.detach())
        if bool(finite.all()):  # host sync: the price of diagnostics.nonfinite=skip
            return True
        if self.reports and self._skip_messages < 5:
            self._skip_messages += 1
            bad = [n for n, ok in zip(names, finite.tolist(), strict=True) if not ok]
            self.log.warning(
                f"doctor: step {step} (epoch {epoch + 1}, batch {micro + 1}): loss component(s) {', '.join(bad)} "
                "not finite; the update is skipped (diagnostics.nonfinite=skip)"
            )
        return False

    @contextlib.contextmanager
    def watch_update(self, model: nn.Module, *, step: int, log_step: bool) -> Iterator[None]:
        """Around an optimizer step: measure ‖Δw‖/‖w‖ on the device, read at the next log line.

        Measured on logging steps and on the step where warmup ends (the peak learning rate, where a
        too-high rate shows most); the log line reports the largest value since the previous one. Costs a
        copy of (at most :data:`UPDATE_PROBE_MAX_ELEMENTS` of) the parameters on those steps only.
        """
        if not (self.reports and (log_step or step == max(1, self.context.warmup_steps))):
            yield
            return
        if self._probe is None:
            self._probe, total = [], 0
            for p in model.parameters():
                if p.requires_grad and (total == 0 or total + p.numel() <= UPDATE_PROBE_MAX_ELEMENTS):
                    self._probe.append(p)
                    total += p.numel()
        with torch.no_grad():
            before = [p.detach().clone() for p in self._probe]
        yield
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach() for p in self._probe], before)
            moved = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(delta)))
            size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
            ratio = moved.float() / size.float().clamp_min(1e-12)
            self._update_ratio = ratio if self._update_ratio is None else torch.maximum(self._update_ratio, ratio)

    def interval_values(self) -> dict[str, float]:
        """Extra values for the log record: ``update_ratio`` (one host read, on a logging step)."""
        if self._update_ratio is None:
            return {}
        value, self._update_ratio = float(self._update_ratio), None
        return {"update_ratio": value}

    # -- logging steps, epoch ends, evaluations ----------------------------------------------------
    def on_train_log(self, values: Mapping[str, Any], model: nn.Module, *, epoch: int, step: int) -> None:
        """A log line with ``values`` (those of its ``metrics.jsonl`` record) was written.

        Every process calls this: a non-finite loss stops all of them together.

        Raises:
            NonFiniteLossError: under ``diagnostics.nonfinite=stop``.
        """
        if not self.enabled:
            return
        losses = [v for k, v in values.items() if k == "loss" or k.startswith("loss/")]
        grad = values.get("grad_norm")
        grads_bad = grad is not None and not math.isfinite(grad) and self.context.amp != "fp16"
        self._check_finite(losses, grads_bad, step)
        self._recent.clear()
        if not self.reports:
            return
        self.records.append({"kind": "train", "epoch": epoch + 1, "step": step, **values})
        for finding in check_history(self.records, self.context, self.th, cores=os.cpu_count()):
            self._raise(finding, update=True)
        mode = check_train_mode(model, step)
        if mode is not None:
            self._raise(mode)

    def on_epoch_end(self, epoch_mean_loss: float, step: int) -> None:
        """End of a training epoch, before evaluation and checkpoints (the epoch mean is already on the host)."""
        if not self.enabled:
            return
        if self.reports:
            self._flush_batch_report()  # an epoch shorter than the inspected batches
        self._check_finite([epoch_mean_loss], False, step)
        self._recent.clear()

    def on_validation(self, record: Mapping[str, Any]) -> None:
        """An evaluation's metrics were logged."""
        if not self.reports:
            return
        self.records.append(dict(record))
        for finding in check_history(self.records, self.context, self.th, cores=os.cpu_count()):
            self._raise(finding, update=True)

    def finish(self) -> list[Finding]:
        """End of the run (also after an error): final history checks and the "Diagnosis" section."""
        if not self.reports or self._finished:
            return []
        self._finished = True
        self._flush_batch_report()
        for finding in check_history(self.records, self.context, self.th, final=True, cores=os.cpu_count()):
            self._raise(finding, update=True, announce=False)
        findings = self.findings.all()
        for finding in findings:  # refined versions: the reader keeps the last line of each id
            if self._written.get(finding.id) != finding:
                self._append({"kind": "finding", **finding.to_dict()})
        lines = format_diagnosis(findings, summarize_history(self.records, self.context))
        emit = self.log.warning if any(f.is_severe for f in findings) else self.log.info
        self.log.info("=" * 80)
        for line in lines:
            emit(line)
        if self.run_dir is not None:
            emit(f"(trainwell doctor {self.run_dir} prints this again; trainwell report {self.run_dir} draws the run)")
        return findings

    # -- non-finite values --------------------------------------------------------------------------
    def _check_finite(self, losses: Sequence[float], grads_bad: bool, step: int) -> None:
        if self.skips_nonfinite:
            return  # handled per step
        if all(math.isfinite(v) for v in losses) and not grads_bad:
            return
        finding, path = None, None
        if self.reports:
            finding, path = self._describe_nonfinite(losses, step)
            self._raise(finding)
        message = finding.evidence if finding is not None else f"non-finite loss or gradient by step {step}"
        raise NonFiniteLossError(
            f"Training stopped: {message}."
            + (f" The batch is saved in {path}." if path else "")
            + " (diagnostics.nonfinite=stop; `skip` would skip such steps instead.)"
        )

    def _describe_nonfinite(self, losses: Sequence[float], step: int) -> tuple[Finding, Path | None]:
        """Name the first non-finite step and component from the kept loss vectors; save that batch."""
        rows = self._recent
        flags = torch.stack([torch.isfinite(r.values).all() for r in rows]).tolist() if rows else []
        bad = next((r for r, ok in zip(rows, flags, strict=True) if not ok), None)
        path = None
        if bad is None:
            loss_bad = not all(math.isfinite(v) for v in losses)
            evidence = (
                f"the loss became non-finite on another process by step {step}"
                if loss_bad
                else f"the gradient norm became non-finite in the log interval ending at step {step} while every "
                "loss component stayed finite"
            )
            first = None
        else:
            values = bad.values.tolist()
            names = [n for n, v in zip(bad.names, values, strict=True) if not math.isfinite(v)]
            first = names[0]
            shown = ", ".join(f"{n} = {v:.4g}" for n, v in zip(bad.names, values, strict=True))
            evidence = (
                f"the loss became non-finite at step {bad.step} (epoch {bad.epoch + 1}, batch {bad.micro + 1}); "
                f"first non-finite component: '{first}' ({shown})"
            )
            path = self._save_batch(bad)
        fix = (
            "Look at the saved batch and at how the component is computed: log/sqrt/division at 0, an "
            "unmasked missing label, exp overflow, fp16 overflow. If it happens only after a while, the learning "
            "rate may be too high (see the gradient norm before it). To train through rare bad batches, set "
            "diagnostics.nonfinite=skip."
        )
        if first is None:
            fix = (
                "A finite loss with a non-finite gradient points at an operation with an infinite derivative at "
                "the current values (sqrt or norm at 0, acos at ±1, pow with a fractional exponent at 0): add an "
                "epsilon. diagnostics.nonfinite=skip skips such steps."
            )
        title = f"The loss became non-finite (first: '{first}')" if first else "Non-finite values in training"
        return Finding("train.nonfinite", "error", title, evidence, fix, bad.step if bad else step), path

    def _save_batch(self, row: _LossRow) -> Path | None:
        """Re-read the micro-batch ``row`` from the dataset and save it with its indices (rank 0, best effort)."""
        if self.run_dir is None:
            return None
        payload: dict[str, Any] = {
            "step": row.step,
            "epoch": row.epoch + 1,
            "batch_in_epoch": row.micro + 1,
            "losses": dict(zip(row.names, row.values.tolist(), strict=True)),
        }
        if self._data is not None:
            try:
                indices = batch_indices(self._data.sampler, row.epoch, row.micro, self._data.batch_size)
                payload["indices"] = indices
                payload["batch"] = fetch_batch(self._data.dataset, indices, self._data.collate_fn)
                payload["note"] = "re-read from the dataset: random augmentations may differ from the trained batch"
            except Exception as err:  # the finding matters more than the file
                payload["error"] = f"could not re-read the batch: {err!r}"
        path = self.run_dir / NONFINITE_BATCH_FILE
        torch.save(payload, path)
        return path

    # -- findings -------------------------------------------------------------------------------------
    def _raise(self, finding: Finding, *, update: bool = False, announce: bool = True) -> None:
        """Report a finding once (log + ``findings.jsonl``). ``update``: a history check may refine its
        evidence later (counts, windows); the refined version replaces it in memory and is written by
        :meth:`finish`."""
        if self.findings.is_ignored(finding.id):
            return
        if finding.id in self.findings.items:
            if update:
                self.findings.add(finding)
            return
        self.findings.add(finding)
        self._written[finding.id] = finding
        self._append({"kind": "finding", **finding.to_dict()})
        if announce:
            emit = self.log.warning if finding.severity != "info" else self.log.info
            for line in format_finding(finding, indent="    "):
                emit(f"doctor: {line}")

    def _append(self, data: Mapping[str, Any]) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / FINDINGS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")


# -- re-reading a batch ------------------------------------------------------------------------------
def batch_indices(sampler: Any, epoch: int, micro: int, batch_size: int) -> list[int]:
    """Dataset indices of micro-batch ``micro`` of ``epoch`` on this process (the sampler is not changed)."""
    probe = copy.copy(sampler)
    probe.set_epoch(epoch, start=0)
    order = list(iter(probe))
    return order[micro * batch_size : (micro + 1) * batch_size]


def fetch_batch(dataset: Dataset, indices: Sequence[int], collate_fn: Callable | None) -> Any:
    """The batch a DataLoader would build from ``indices`` (``__getitems__`` when the dataset has it)."""
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(list(indices)) if getitems is not None else [dataset[i] for i in indices]
    return (collate_fn or default_collate)(items)


# -- trainwell doctor RUN_DIR ---------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; a torn last line (a running or killed run) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


@dataclass
class RunDiagnosis:
    """What ``trainwell doctor`` and ``trainwell report`` know about a run directory."""

    run_dir: Path
    status: str
    config: dict[str, Any]
    context: RunContext
    records: list[dict[str, Any]]
    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def has_severe(self) -> bool:
        return any(f.is_severe for f in self.findings)

    def lines(self) -> list[str]:
        return [f"Run {self.run_dir} ({self.status})", *format_diagnosis(self.findings, self.summary)]


def _run_status(log_text: str) -> str:
    if "Finished run" in log_text:
        return "finished"
    if "Training stopped:" in log_text or "train.nonfinite" in log_text:
        return "stopped by the doctor"
    if "Stopped by SIG" in log_text:
        return "stopped by a signal"
    return "unfinished: still running, or ended without its closing banner"


def diagnose_run(run_dir: str | Path) -> RunDiagnosis:
    """Findings for a finished or running run from its files (metrics.jsonl, findings.jsonl, config.yaml, train.log).

    Raises:
        FileNotFoundError: ``run_dir`` holds neither ``metrics.jsonl`` nor ``config.yaml``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"'{run_dir}' is not a trainwell run directory (no metrics.jsonl or config.yaml in it); pass the "
            "directory a run printed as 'run directory: ...'."
        )
    config_path = run_dir / "config.yaml"
    config = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}) if config_path.is_file() else {}
    log_path = run_dir / "train.log"
    log_text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    saved = read_jsonl(run_dir / FINDINGS_FILE)
    contexts = [r for r in saved if r.get("kind") == "context"]
    if contexts:
        context = RunContext(**{k: v for k, v in contexts[-1].items() if k in RunContext.__dataclass_fields__})
    else:
        planned = re.search(r"(\d+) optimizer steps", log_text)
        context = RunContext.from_config_dict(config, total_steps=int(planned.group(1)) if planned else None)
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") in ("train", "val")]
    status = _run_status(log_text)
    ignore = ((config.get("diagnostics") or {}).get("ignore")) or ()
    findings = FindingSet(ignore=tuple(ignore))
    for data in saved:
        if data.get("kind") == "finding":
            findings.add(Finding.from_dict(data))
    for finding in check_history(records, context, final=not status.startswith("unfinished"), cores=os.cpu_count()):
        findings.add(finding)
    return RunDiagnosis(
        run_dir=run_dir,
        status=status,
        config=config,
        context=context,
        records=records,
        findings=findings.all(),
        summary=summarize_history(records, context),
    )
