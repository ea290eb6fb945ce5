"""The live doctor: the object the loop calls at a few named places. It observes; it never decides what the loop does.

Rank 0 reports; every finding is logged once and appended to ``findings.jsonl``.

* ``maybe_inspect_batch`` — the first batches of a fresh run: a tensor report and ``Task.check_batch``;
* ``maybe_debug_losses`` — the untrained model's loss on the first batches of a fresh run (the reference of
  ``loss.diverged``; three extra forwards on the first batch under no_grad), and ``Task.debug_losses`` under
  ``diagnostics.debug_loss``;
* ``watch_update`` — on step 1 and logging steps only, the size of the optimizer's update ‖Δw‖/‖w‖ and ‖w‖;
* ``on_train_log`` / ``on_validation`` — the history checks of :mod:`trainwell.doctor.checks` on values the loop
  has already read, and the model-mode check;
* ``finish`` — the end-of-run "Diagnosis" section.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.config.schema import DiagnosticsConfig
from trainwell.doctor.batch import (
    TensorStats,
    batch_halves,
    batch_size_of,
    batch_tensor_stats,
    check_batch_values,
    check_train_mode,
    format_batch_report,
)
from trainwell.doctor.checks import RunContext, Thresholds, check_history, summarize_history
from trainwell.doctor.context import metric_specs_of
from trainwell.doctor.divergence import CAUSES, consolidate
from trainwell.doctor.findings import (
    FINDINGS_FILE,
    Finding,
    FindingSet,
    format_diagnosis,
    format_finding,
    read_findings,
)
from trainwell.engine.distributed import DistEnv
from trainwell.engine.fsdp import is_sharded, local_value
from trainwell.records.findings import FINDINGS_VERSION, findings_line
from trainwell.records.jsonl import open_for_append
from trainwell.records.metrics import METRICS_FILE, read_metrics

DEBUG_LOSS_ENV = "TRAINWELL_DEBUG_LOSS"
"""``TRAINWELL_DEBUG_LOSS=1`` turns ``diagnostics.debug_loss`` on; the CLI records it in ``config.yaml``."""
UPDATE_PROBE_MAX_ELEMENTS = 1 << 24
_NOT_MEASURED = contextlib.nullcontext()
"""The update-size probe copies at most this many parameter elements (the first tensors, in order)."""


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
        self.debug_loss = cfg.debug_loss
        self._batch_stats: list[list[TensorStats]] = []
        self._inspecting = True
        self._debugged = 0
        self._probe: list[torch.Tensor] | None = None
        self._update_ratio: torch.Tensor | None = None
        self._weight_norm: torch.Tensor | None = None
        self._first_step: dict[str, float] = {}  # step 1's update size and ‖w‖, the frozen share (host values)
        self._init_losses: list[torch.Tensor] = []  # the training step's own, before the first update
        self._init_halves: list[torch.Tensor] = []  # the probe's, on each half of those micro-batches
        self._probe_loss_next = False
        self._init_one_sample = False  # the first batch held one sample: its loss is a single draw
        self._resumed = False
        self._stepped = False  # the first optimizer step has begun
        self._finished = False
        self._written: dict[str, Finding] = {}  # the version of each finding last written to findings.jsonl
        # Which check raised an id: a finding whose condition no longer holds is resolved, not reported at the end
        # (an early evaluation of a barely trained model may sit outside a plausible range, then recover).
        self._history_ids: set[str] = set()
        self._evaluation_ids: set[str] = set()

    def on_fit_start(self, *, resumed: bool) -> None:
        """Before the first step: record the run context; a resumed run picks up its history and findings."""
        self._inspecting = not resumed  # "the first batches" are those of a fresh run
        self._resumed = resumed
        if self.reports:
            self.context = dataclasses.replace(self.context, metric_specs=metric_specs_of(self.task))
        if not self.reports or self.run_dir is None:
            return
        if resumed:
            self.records = read_metrics(self.run_dir / METRICS_FILE)
            for finding in read_findings(self.run_dir / FINDINGS_FILE, keep_merged=True).values():
                self.findings.add(finding)
                self._written[finding.id] = finding
        self._append(findings_line("context", self.context.__dict__))

    # -- the first batches ------------------------------------------------------------------------
    def maybe_inspect_batch(self, batch: Any, epoch: int, micro: int) -> None:
        """The first ``Thresholds.first_batches`` batches of a fresh run: tensor report and task checks."""
        # Only batches seen before the first optimizer step measure the *untrained* model.
        self._probe_loss_next = self.reports and not self._resumed and not self._stepped and epoch == 0
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
        """The untrained model's loss on the halves of the first batches (:meth:`_probe_initial_loss`); then, under
        ``diagnostics.debug_loss`` (or TRAINWELL_DEBUG_LOSS=1): loss internals of the first batches.

        The model runs again on parts of the batch; the RNG streams and the module buffers (BatchNorm running
        statistics) are restored afterwards, so the run trains exactly as it would without the switch.
        """
        if self._probe_loss_next:
            self._probe_loss_next = False
            self._probe_initial_loss(model, batch)
        sharded = self.env.world_size > 1 and is_sharded(model)  # a forward on rank 0 alone would wait for the others
        if sharded or not (self.debug_loss and self.env.is_main and self._debugged < self.th.first_batches):
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

    def _probe_initial_loss(self, model: nn.Module, batch: Any) -> None:
        """The total loss of the model before its first update on the two halves of a batch, under no_grad (the
        whole batch's is the training step's own, :meth:`note_initial_loss`: it is not computed twice).

        It is the reference of ``loss.diverged``: what predicting with the initial weights costs. RNG streams,
        buffers (BatchNorm statistics) and every module's train/eval flag are restored, and the calls go to a
        shallow copy of the task (a counter it keeps in an attribute — steps seen, an annealing schedule — does
        not move), so the run trains as it would without it. Skipped where it cannot run alone: SyncBatchNorm or FSDP on
        several processes (it would wait for the other processes' statistics). A task whose compute_losses fails
        is left to fail in the real step, with the engine's message.
        """
        alone = is_sharded(model) or any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        if self.env.world_size > 1 and alone:  # a forward on rank 0 alone would wait for the other processes
            return
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        modes = {m: m.training for m in model.modules()}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                # The halves of the batch (the whole is the training step's own loss, note_initial_loss): their
                # spread stands for the loss's noise at initialisation (an over-estimate for the logged interval
                # means, so the divergence bound errs on the safe side).
                task = copy.copy(self.task)
                self._init_one_sample = batch_size_of(batch) == 1
                for part in batch_halves(batch):
                    output = task.compute_losses(model, part)
                    losses = getattr(output, "losses", output)
                    values = [v.detach().double().sum() for v in losses.values() if isinstance(v, torch.Tensor)]
                    if values:
                        self._init_halves.append(torch.stack(values).sum().cpu())  # host read: first batch only
        except Exception:  # the training step raises the real error, with its own message
            pass
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            for module, training in modes.items():
                module.training = training

    def note_initial_loss(self, total: torch.Tensor) -> None:
        """The training step's own loss on each micro-batch before the first update (kept on the device)."""
        if self.reports and not self._resumed:
            self._init_losses.append(total.detach().double())

    def watch_update(self, model: nn.Module, *, step: int, log_step: bool) -> contextlib.AbstractContextManager[None]:
        """Around an optimizer step: ‖Δw‖/‖w‖ on the device (read at the next log line), on logging steps and where
        warmup ends (the peak LR); the largest since the last line is logged. Costs a copy of (at most
        :data:`UPDATE_PROBE_MAX_ELEMENTS` of) the parameters then; other steps get a shared no-op context."""
        first = step == 1 and not self._resumed
        self._stepped = True
        if not (self.reports and (log_step or first or step == max(1, self.context.warmup_steps))):
            return _NOT_MEASURED
        return self._measure_update(model, first=first, log_step=log_step)

    @contextlib.contextmanager
    def _measure_update(self, model: nn.Module, *, first: bool, log_step: bool) -> Iterator[None]:
        if self._probe is None:
            self._probe, total, frozen, everything = [], 0, 0, 0
            for p in model.parameters():
                everything += p.numel()
                frozen += 0 if p.requires_grad else p.numel()
                if p.requires_grad and (total == 0 or total + p.numel() <= UPDATE_PROBE_MAX_ELEMENTS):
                    self._probe.append(local_value(p))  # FSDP: this process's shard (a sample), no collective
                    total += p.numel()
            self._first_step["frozen_share"] = frozen / max(1, everything)
        if not self._probe:
            yield
            return
        with torch.no_grad():
            before = [p.detach().clone() for p in self._probe]
        yield
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach() for p in self._probe], before)
            moved = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(delta)))
            size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
            ratio = moved.float() / size.float().clamp_min(1e-12)
            self._weight_norm = size.float()
        if first:  # host read, once: the reference values of the divergence and decay checks
            # Kept apart from the interval's `update_ratio`: step 1 (Adam's sign step, before warmup has ramped)
            # is not what optim.large_updates judges.
            self._first_step.update(update_ratio_first=float(ratio), weight_norm_init=float(size))
        if log_step or not first:
            self._update_ratio = ratio if self._update_ratio is None else torch.maximum(self._update_ratio, ratio)

    def interval_values(self) -> dict[str, float]:
        """Extra values for the log record: ``update_ratio`` (one host read, on a logging step)."""
        if self._update_ratio is None:
            return {}
        value, self._update_ratio = float(self._update_ratio), None
        return {"update_ratio": value}

    def _update_reference(self, step: int) -> None:
        """The run's reference values (:attr:`RunContext.reference`), read on the host at a logging step: the
        untrained model's loss, step 1's update size and ‖w‖, the frozen share, and ‖w‖ at the latest log step."""
        ref = dict(self.context.reference)
        if self._init_losses and "loss_init" not in ref:
            values = [float(v) for v in (*self._init_losses, *self._init_halves)]  # host read: once
            if all(math.isfinite(v) for v in values):
                ref["loss_init"] = values[0]  # the whole first batch; the halves give the spread
                if len(values) > 1 or not self._init_one_sample:  # one sample: one draw, no spread measured
                    ref["loss_init_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        ref.update(self._first_step)
        if self._weight_norm is not None:
            ref["weight_norm_last"], ref["weight_norm_step"] = float(self._weight_norm), step
            self._weight_norm = None
        if ref != self.context.reference:
            self.context = dataclasses.replace(self.context, reference=ref)

    # -- logging steps, epoch ends, evaluations ----------------------------------------------------
    def on_train_log(self, values: Mapping[str, Any], model: nn.Module, *, epoch: int, step: int) -> None:
        """A log line with ``values`` (those of its ``metrics.jsonl`` record) was written (rank 0 looks)."""
        if not self.reports:
            return
        self.records.append({"kind": "train", "epoch": epoch + 1, "step": step, **values})
        self._update_reference(step)
        if self._history_due():
            self._raise_history(final=False)
        mode = check_train_mode(model, step)
        if mode is not None:
            self._raise(mode)

    def _history_due(self) -> bool:
        """Whether to run the history checks at this log line: every line for the first 64, then every
        ``n // 64``-th, so that a long run pays a bounded cost per line (each pass reads the whole history, n records)
        while a problem is still reported within ~1.5 % of the run; ``finish`` always runs them once more."""
        n = len(self.records)
        return n <= 64 or n % (n // 64) == 0

    def on_epoch_end(self) -> None:
        """End of a training epoch: an epoch shorter than the inspected batches still gets its report."""
        if self.reports:
            self._flush_batch_report()

    def on_validation(self, record: Mapping[str, Any]) -> None:
        """An evaluation's metrics were logged."""
        if not self.reports:
            return
        self.records.append(dict(record))
        self._raise_history(final=False)

    def finish(self, recorded: Sequence[Finding] = ()) -> list[Finding]:
        """End of the run (also after an error): final history checks and the "Diagnosis" section.

        ``recorded``: what other components found (the non-finite policy's stop), reported here like the rest.
        """
        if not self.reports or self._finished:
            return []
        self._finished = True
        for finding in recorded:
            self._raise(finding, announce=False)
        self._flush_batch_report()
        self._raise_history(final=True)
        if self.context.reference:  # what `trainwell doctor RUN_DIR` judges against (the last line wins)
            self._append(findings_line("reference", self.context.reference))
        findings, merged = consolidate(self.findings.all())
        for finding in findings:  # refined versions: the reader keeps the last line of each id
            if self._written.get(finding.id) != finding:
                self._append(findings_line("finding", finding))
        for symptom, cause in merged.items():  # announced before its cause was known: now part of the cause
            if symptom in self._written:
                self._append(findings_line("merged", {"id": symptom, "into": cause}))
        lines = format_diagnosis(findings, summarize_history(self.records, self.context))
        emit = self.log.warning if any(f.is_severe for f in findings) else self.log.info
        self.log.info("=" * 80)
        for line in lines:
            emit(line)
        if self.run_dir is not None:
            emit(f"(trainwell doctor {self.run_dir} prints this again; trainwell report {self.run_dir} draws the run)")
        return findings

    # -- findings -------------------------------------------------------------------------------------
    def report(self, findings: Sequence[Finding]) -> None:
        """Findings another component made (an evaluator's checks of its predictions), reported like the doctor's."""
        if not self.reports:
            return
        step = self.records[-1].get("step") if self.records else None
        current = [
            f if f.step is not None else dataclasses.replace(f, step=step) for f in findings if isinstance(f, Finding)
        ]
        for finding in current:
            self._raise(finding, update=True)
        # Called once per evaluation with everything the evaluator noticed: what it no longer notices has resolved.
        now = {f.id for f in current}
        for finding_id in sorted(self._evaluation_ids - now):
            self._resolve(finding_id, "the latest evaluation no longer shows it")
        self._evaluation_ids = now

    def _raise_history(self, *, final: bool) -> None:
        """Run the history checks; a symptom whose cause is already known is kept quietly (folded at the end).

        A history finding whose check no longer fires is resolved: ``val.*`` ones at once (they judge the latest
        evaluation), the others when the run ends (the final pass judges the whole history).
        """
        found = check_history(self.records, self.context, self.th, final=final, cores=os.cpu_count())
        present = {f.id for f in found} | set(self.findings.items)
        for finding in found:
            explained = any(finding.id in CAUSES.get(cause, ()) for cause in present if cause != finding.id)
            self._raise(finding, update=True, announce=not explained and not final, quiet=explained)
        now = {f.id for f in found}
        gone = {i for i in self._history_ids - now if final or i.startswith("val.")}
        for finding_id in sorted(gone):
            why = "the whole run's history no longer shows it" if final else "the latest evaluation no longer shows it"
            self._resolve(finding_id, why)
        self._history_ids = (self._history_ids - gone) | {i for i in now if i in self.findings.items}

    def _resolve(self, finding_id: str, why: str) -> None:
        """A finding reported earlier whose condition no longer holds: dropped from the diagnosis, and said so."""
        finding = self.findings.items.pop(finding_id, None)
        self._history_ids.discard(finding_id)
        if finding is None:
            return
        step = self.records[-1].get("step") if self.records else None
        if self._written.pop(finding_id, None) is not None:
            self._append(findings_line("resolved", {"id": finding_id, "step": step, "why": why}))
            self.log.info(f"doctor: resolved: {finding_id} (step {finding.step}) — {why} (step {step})")

    def _raise(self, finding: Finding, *, update: bool = False, announce: bool = True, quiet: bool = False) -> None:
        """Report a finding once (log + ``findings.jsonl``). ``update``: a history check may refine its
        evidence later (counts, windows); the refined version replaces it in memory and is written by
        :meth:`finish`. ``quiet``: keep it in memory only (a symptom of a known cause)."""
        if self.findings.is_ignored(finding.id):
            return
        if finding.id in self.findings.items:
            if update:
                self.findings.add(finding)
            return
        self.findings.add(finding)
        if quiet:
            return
        self._written[finding.id] = finding
        self._append(findings_line("finding", finding))
        if announce:
            emit = self.log.warning if finding.severity != "info" else self.log.info
            for line in format_finding(finding, indent="    "):
                emit(f"doctor: {line}")

    def _append(self, data: Mapping[str, Any]) -> None:
        if self.run_dir is None:
            return
        with open_for_append(self.run_dir / FINDINGS_FILE, FINDINGS_VERSION) as f:
            f.write(json.dumps(data) + "\n")
