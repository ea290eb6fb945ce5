"""The training loop: one explicit ``fit`` that calls each component by name.

Where does the learning rate change? ``engine.step.optimizer_step`` (``scheduler.step()`` after an applied optimizer
step; the curve is ``engine.schedule.lr_factor``). Where is the model switched to
train/eval? ``Trainer._train_one_epoch`` and ``evaluate``. Where do loss values reach the host?
``Trainer._log_train`` — once per ``train.log_every`` optimizer steps, never in between. Where are
checkpoints written? ``_save_checkpoints`` (epoch end), ``_maybe_save_latest`` (inside an epoch) and
``_stop_on_signal``; what they hold: ``state_dict`` / ``load_state_dict``; files: ``engine/checkpoint.py``.
Where does the training doctor look? The ``self.doctor.*`` calls (``engine/doctor.py``; the checks
themselves are in ``engine/diagnostics.py``).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainwell.config.loader import config_to_dict, config_to_yaml
from trainwell.config.schema import ExperimentConfig
from trainwell.engine import distributed as D
from trainwell.engine.best import is_better, parse_metric_expression
from trainwell.engine.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    CheckpointManager,
    WeightsReport,
    load_checkpoint,
    to_plain,
)
from trainwell.engine.checkpoint import load_model_weights as copy_model_weights
from trainwell.engine.diagnostics import RunContext
from trainwell.engine.doctor import TrainingDoctor
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.engine.logging import (
    DeviceMeter,
    MetricsWriter,
    ProgressBar,
    format_value,
    setup_console_logging,
)
from trainwell.engine.resume import config_changes, library_versions, position_mismatch, trim_metrics_log
from trainwell.engine.rng import gather_rng_states, loader_seed, restore_own_rng_state
from trainwell.engine.rundir import make_run_dir
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.signals import StopRequest, TrainingInterrupted
from trainwell.engine.step import StepStats, build_optimizer, optimizer_step
from trainwell.engine.task import Task
from trainwell.engine.tensors import move_to_device


@dataclass
class TrainState:
    """Where training is: saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    """Epochs completed."""
    global_step: int = 0
    """Optimizer steps taken (including fp16 steps the GradScaler skipped)."""
    batch_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed (non-zero only mid-epoch)."""
    best_value: float | None = None
    best_epoch: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` hands back: the run directory, the final state and the last validation metrics."""

    run_dir: Path | None
    state: TrainState
    metrics: dict[str, float]


_NO_OP = contextlib.nullcontext()
"""A reusable do-nothing context (no object per step on the hot path)."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CUDA included) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(mode: str) -> torch.dtype | None:
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


class Trainer:
    """Owns the model, optimizer, schedule, data and outputs of one run; ``fit()`` trains it."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        task: Task,
        *,
        env: D.DistEnv | None = None,
        write_outputs: bool = True,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.env = env or D.env_from_torchrun()
        self.device = D.select_device(cfg.train.device, self.env)
        D.init_process_group(self.env, self.device, cfg.distributed.backend, cfg.distributed.timeout_s)
        # The same seed on every process while the datasets and the model are built (a dataset that
        # draws from the global RNG must be the same everywhere, or evaluation shards would not tile it);
        # a per-rank seed once they exist (below).
        seed_everything(cfg.train.seed)

        self.run_dir: Path | None = None
        if write_outputs:
            run_dir = make_run_dir(cfg.run.name, cfg.run.dir) if self.env.is_main else None
            self.run_dir = D.broadcast_object(run_dir, self.env)  # type: ignore[assignment]
        self.is_writer = self.env.is_main and self.run_dir is not None
        self.log = setup_console_logging(self.run_dir if self.is_writer else None, self.env.is_main)
        if self.is_writer:
            assert self.run_dir is not None
            (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
        self.metrics_writer = MetricsWriter(self.run_dir, enabled=self.is_writer)

        self.train_set, self.val_set = task.build_datasets()
        self.model: nn.Module = task.build_model().to(self.device)
        # ddp_model runs training forwards; the bare model is optimised, saved and evaluated.
        self.model, self.ddp_model = D.wrap_model(self.model, self.device, self.env, cfg.distributed)
        # Per-rank seed: dropout masks and worker augmentations differ across ranks; the data order
        # comes from the sampler.
        seed_everything(cfg.train.seed + self.env.rank)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        # Different lengths would give the processes different step counts: a hang, not an error.
        D.require_same_on_all_ranks(len(self.train_set), "len(train dataset)", self.env)  # type: ignore[arg-type]
        self.sampler = D.TrainSampler(len(self.train_set), seed=cfg.train.seed, env=self.env)  # type: ignore[arg-type]
        # Re-seeded every epoch (rng.loader_seed), so worker seeds survive a resume.
        self.loader_generator = torch.Generator()
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.train.batch_size,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=task.collate_fn(),
            pin_memory=cfg.data.pin_memory and self.device.type == "cuda",
            persistent_workers=cfg.data.persistent_workers and cfg.data.num_workers > 0,
            drop_last=False,
            generator=self.loader_generator,
        )
        self.batches_per_epoch = -(-self.sampler.per_process // cfg.train.batch_size)
        steps_per_epoch = -(-self.batches_per_epoch // cfg.train.grad_accum_steps)
        self.total_steps = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=cfg.schedule.warmup_steps,
            total_steps=self.total_steps,
            decay=cfg.schedule.decay,
            min_lr_ratio=cfg.schedule.min_lr_ratio,
        )
        self.amp_dtype = amp_dtype(cfg.train.amp)
        # GradScaler only for fp16: bf16 has fp32's exponent range and needs no loss scaling.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.best_metric = parse_metric_expression(cfg.eval.best_metric) if cfg.eval.best_metric else None
        self.state = TrainState()
        self.stats = StepStats(device=self.device)
        self.loss_meter = DeviceMeter()
        self.checkpoints = (
            CheckpointManager(self.run_dir / "checkpoints", cfg.checkpoint, log=self.log.warning)
            if self.run_dir is not None
            else None
        )
        self.stop_request = StopRequest(self.env)
        self.doctor = TrainingDoctor(
            cfg.diagnostics,
            context=RunContext.from_config_dict(
                config_to_dict(cfg),
                total_steps=self.total_steps,
                device=self.device.type,
                world_size=self.env.world_size,
            ),
            env=self.env,
            run_dir=self.run_dir if self.is_writer else None,
            log=self.log,
            task=task,
        )
        self.doctor.watch_data(self.train_set, self.sampler, task.collate_fn(), cfg.train.batch_size)

    # -- helpers ------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for the configured precision (the current ``torch.amp`` API)."""
        if self.amp_dtype is None:
            return _NO_OP
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _info(self, message: str) -> None:
        self.log.info(message)

    def should_stop(self) -> bool:
        """Whether the optimizer-step budget ``train.max_steps`` is spent."""
        return self.cfg.train.max_steps is not None and self.state.global_step >= self.cfg.train.max_steps

    def should_evaluate(self, epoch: int, last: bool) -> bool:
        every = self.cfg.eval.every_epochs
        return last or (every > 0 and (epoch + 1) % every == 0)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train for ``train.epochs`` (or ``train.max_steps``), evaluating and checkpointing.

        Raises:
            TrainingInterrupted: SIGTERM / SIGINT / SIGUSR1 stopped the run; ``last.pt`` holds that step.
            NonFiniteLossError: the loss went NaN/Inf under ``diagnostics.nonfinite=stop`` (see ``engine/doctor.py``).
        """
        cfg = self.cfg
        self._start_banner()
        started = time.perf_counter()
        self.stop_request.install()
        self.doctor.on_fit_start(resumed=self.state.global_step > 0 or self.state.batch_in_epoch > 0)
        try:
            for epoch in range(self.state.epoch, cfg.train.epochs):
                if self.should_stop():
                    break
                epoch_started = time.perf_counter()
                train_loss = self._train_one_epoch(epoch)
                self.doctor.on_epoch_end(train_loss, self.state.global_step)  # NaN: stop before eval/checkpoints
                if self.stop_request.agreed:  # a signal ended the epoch early, at an optimizer-step boundary
                    self._stop_on_signal(save=True)
                self.state.epoch = epoch + 1
                self.state.batch_in_epoch = 0
                last = self.state.epoch == cfg.train.epochs or self.should_stop()
                result = self.evaluate(epoch) if self.should_evaluate(epoch, last) else None
                improved = self._maybe_update_best(result, epoch)
                self._save_checkpoints(epoch, improved)
                self._epoch_summary(epoch, train_loss, result, time.perf_counter() - epoch_started)
                if not last and self.stop_request.should_stop(global_step=self.state.global_step, sync=True):
                    self._stop_on_signal(save=False)  # last.pt was just written
        finally:
            self.stop_request.uninstall()
            self.metrics_writer.close()
            self.doctor.finish()  # the "Diagnosis" section, also when the run stops early
        self._end_banner(time.perf_counter() - started)
        return FitResult(run_dir=self.run_dir, state=self.state, metrics=self.state.last_metrics)

    def _train_one_epoch(self, epoch: int) -> float:
        """One pass over this process's shard; returns the epoch's mean total loss."""
        cfg = self.cfg.train
        self.ddp_model.train()
        self.sampler.set_epoch(epoch, start=self.state.batch_in_epoch * cfg.batch_size)
        # The DataLoader's own generator, not the global RNG, seeds its workers: a resumed epoch then
        # draws the same worker seeds and leaves the dropout stream alone.
        self.loader_generator.manual_seed(loader_seed(cfg.seed, epoch, self.env.rank))
        if self.state.batch_in_epoch == 0:  # a resumed epoch keeps the sums restored from the checkpoint
            self.loss_meter.reset()  # one meter serves the log lines (intervals) and the epoch summary
        bar = ProgressBar(
            total=self.batches_per_epoch,
            description=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            mode=cfg.progress_bar,
            enabled=self.env.is_main,
        )
        bar.update(self.state.batch_in_epoch)
        batches: Iterator[Any] = iter(self.train_loader)
        accum = cfg.grad_accum_steps
        while True:
            wait_started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            self.stats.data_wait_s += time.perf_counter() - wait_started
            micro = self.state.batch_in_epoch  # index of this micro-batch in the epoch
            group_start = micro - micro % accum
            group_size = min(accum, self.batches_per_epoch - group_start)
            is_update = micro + 1 == group_start + group_size
            # Skip DDP's gradient all-reduce on micro-batches that do not end an accumulation group.
            no_sync = (
                self.ddp_model.no_sync()  # type: ignore[operator]
                if self.env.is_distributed and not is_update
                else _NO_OP
            )
            self.doctor.maybe_inspect_batch(batch, epoch, micro)  # first batches only (their host reads are fine)
            if self.device.type != "cpu":
                batch = move_to_device(batch, self.device)
            self.doctor.maybe_debug_losses(self.model, batch)  # only under diagnostics.debug_loss
            with no_sync:
                names, total, stacked = self._forward(batch)
                if group_size > 1:
                    # k micro-batches must give the gradient of one k-times larger batch.
                    total = total / group_size
                self.scaler.scale(total).backward()
            # No sync under diagnostics.nonfinite=stop; under skip a non-finite micro-batch stays out of the means.
            if self.doctor.observe_losses(names, stacked, epoch=epoch, micro=micro, step=self.state.global_step + 1):
                self.loss_meter.add(names, stacked)
            self.state.batch_in_epoch = micro + 1
            bar.update()
            if is_update:
                should_log = (self.state.global_step + 1) % cfg.log_every == 0
                # ‖Δw‖/‖w‖ on logging steps (and at the peak learning rate): a parameter copy, no sync
                with self.doctor.watch_update(self.model, step=self.state.global_step + 1, log_step=should_log):
                    optimizer_step(
                        model=self.model,
                        optimizer=self.optimizer,
                        scheduler=self.scheduler,
                        scaler=self.scaler,
                        clip_grad_norm=cfg.clip_grad_norm,
                        stats=self.stats,
                        measure_norm=should_log,
                        skip_nonfinite=self.doctor.skips_nonfinite,
                    )
                self.state.global_step += 1
                if should_log:
                    record = self._log_train(epoch, bar)
                    # The doctor's checks on the values just logged; a non-finite loss stops here.
                    self.doctor.on_train_log(record, self.model, epoch=epoch, step=self.state.global_step)
                # Processes agree on a signal only on logging steps (they sync there anyway).
                if self.should_stop() or self.stop_request.should_stop(
                    global_step=self.state.global_step, sync=should_log
                ):
                    break
                self._maybe_save_latest()
        bar.close()
        sums, count = self.loss_meter.read_total()
        # The mean over all processes, like the log lines (one small collective per epoch).
        epoch_mean = torch.tensor([sum(sums.values()) / max(1, count)], dtype=torch.float64)
        return float(D.all_reduce_mean(epoch_mean, self.env)[0])

    def _forward(self, batch: Any) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
        """Named loss components of one micro-batch: ``(names, total, stacked)``.

        ``total`` is their sum, to backpropagate; ``stacked`` ``(K,)`` holds their detached fp32 values for the
        meters (bf16 sums of several terms lose digits). Stacking detached values keeps the extra kernels out
        of the backward graph: with one component, backward runs exactly the graph of a hand-written loop.
        """
        with self.autocast():
            losses = self.task.compute_losses(self.ddp_model, batch)
        if not losses:
            raise RuntimeError(f"{type(self.task).__name__}.compute_losses returned no loss components.")
        values = list(losses.values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        stacked = torch.stack([value.detach().float().reshape(()) for value in values])
        return tuple(losses), total, stacked

    def evaluate(self, epoch: int | None = None) -> EvalResult:
        """Score the validation set exactly once across all processes and log the metrics."""
        result = evaluate(
            task=self.task,
            model=self.model,  # the bare module: no collectives inside the evaluation loop
            dataset=self.val_set,
            evaluator=self.task.build_evaluator(),
            batch_size=self.cfg.eval.batch_size,
            device=self.device,
            env=self.env,
            autocast=self.autocast,
            num_workers=self.cfg.data.num_workers,
            log=self._info,
        )
        self.state.last_metrics = dict(result.metrics)
        if epoch is not None:
            self.metrics_writer.write(
                "val",
                epoch + 1,
                self.state.global_step,
                {"num_samples": result.num_samples, **result.metrics},
                "Val",
            )
            record = {"kind": "val", "epoch": epoch + 1, "step": self.state.global_step, **result.metrics}
            self.doctor.on_validation(record)
        return result

    # -- logging ------------------------------------------------------------------------------
    def _log_train(self, epoch: int, bar: ProgressBar) -> dict[str, Any]:
        """One log line: interval-averaged loss breakdown, LR, grad norm, throughput (one host sync).

        Returns the values of the ``metrics.jsonl`` record (on every process; only rank 0 writes it).
        """
        sums, count = self.loss_meter.read_interval()  # host sync: once per log_every steps
        names = list(sums)
        averaged = D.all_reduce_mean(
            torch.tensor([sums[n] / max(1, count) for n in names], dtype=torch.float64), self.env
        ).tolist()
        components = dict(zip(names, averaged, strict=True))
        total = sum(components.values())
        interval = self.stats.read_and_reset(self.cfg.train.clip_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        bar.set_loss(total)
        record = {"loss": total, **{f"loss/{n}": v for n, v in components.items()}, "lr": lr, **interval}
        record.update(self.doctor.interval_values())  # update_ratio
        if not self.env.is_main:
            return record
        shown = " ".join(f"{n} {format_value(v)}" for n, v in components.items() if v != 0.0)
        grad = f"grad_norm {format_value(interval['grad_norm'])}"
        if self.cfg.train.clip_grad_norm is not None:
            grad += f" (clipped {interval['clip_rate']:.0%})"
        self._info(
            f"epoch {epoch + 1} step {self.state.global_step} "
            f"[{self.state.batch_in_epoch}/{self.batches_per_epoch}] loss {format_value(total)} | {shown} | "
            f"lr {lr:.2e} | {grad} | {interval['steps_per_s']:.1f} it/s, "
            f"data wait {interval['data_wait_share']:.0%}"
        )
        self.metrics_writer.write("train", epoch + 1, self.state.global_step, record, "Train")
        return record

    def _epoch_summary(self, epoch: int, train_loss: float, result: EvalResult | None, seconds: float) -> None:
        units = self.task.metric_units()
        parts = [f"Epoch {epoch + 1}/{self.cfg.train.epochs}", f"train loss {format_value(train_loss)}"]
        if result is not None:
            shown = ", ".join(
                f"{name} {format_value(value)}{' ' + units[name] if name in units else ''}"
                for name, value in result.metrics.items()
                if "/" not in name  # grouped metrics (e.g. per joint) go to files and plots, not the line
            )
            parts.append(f"val {shown}")
        parts.append(f"LR = {self.scheduler.get_last_lr()[0]:.2e}")
        parts.append(f"{seconds:.1f} s")
        self._info(" | ".join(parts))

    def _start_banner(self) -> None:
        cfg = self.cfg
        global_batch = cfg.train.batch_size * self.env.world_size * cfg.train.grad_accum_steps
        params = sum(p.numel() for p in self.model.parameters())
        self._info("=" * 80)
        self._info(f"trainwell run '{cfg.run.name}' — task {cfg.task.class_path}")
        self._info(f"run directory: {self.run_dir}")
        self._info(
            f"device {self.device}, {self.env.world_size} process(es), amp {cfg.train.amp}, "
            f"model {params / 1e6:.2f} M parameters"
        )
        self._info(
            f"batch: {cfg.train.batch_size} per process × {self.env.world_size} process(es) × "
            f"{cfg.train.grad_accum_steps} accumulation = global batch {global_batch}"
        )
        self._info(
            f"data: {len(self.train_set)} train / {len(self.val_set)} val samples; "  # type: ignore[arg-type]
            f"{self.batches_per_epoch} batches per epoch per process; {self.total_steps} optimizer steps"
        )
        self._info("=" * 80)

    def _end_banner(self, seconds: float) -> None:
        self._info("=" * 80)
        self._info(f"Finished run '{self.cfg.run.name}' in {seconds:.1f} s ({self.state.global_step} steps)")
        if self.state.best_value is not None and self.best_metric is not None:
            best_path = self.run_dir / "checkpoints" / "best.pt" if self.run_dir else None
            self._info(
                f"Best {self.best_metric.text} = {format_value(self.state.best_value)} at epoch "
                f"{self.state.best_epoch}; checkpoint: {best_path}"
            )
        if self.state.last_metrics:
            shown = ", ".join(f"{k} {format_value(v)}" for k, v in self.state.last_metrics.items() if "/" not in k)
            self._info(f"Final val: {shown}")
        self._info("=" * 80)

    # -- best model and checkpoints -----------------------------------------------------------
    def _maybe_update_best(self, result: EvalResult | None, epoch: int) -> bool:
        if result is None or self.best_metric is None:
            return False
        value = self.best_metric(result.metrics)
        if not is_better(value, self.state.best_value, self.cfg.eval.best_mode):
            return False
        self.state.best_value = value
        self.state.best_epoch = epoch + 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, as tensors and plain containers only.

        Every process must call it together (it gathers each process's RNG states); rank 0 writes it.
        """
        return {
            "model": self.model.state_dict(),  # the bare module: no DDP "module." prefix
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": {
                "epoch": self.state.epoch,
                "global_step": self.state.global_step,
                "batch_in_epoch": self.state.batch_in_epoch,
                "best_value": self.state.best_value,
                "best_epoch": self.state.best_epoch,
                "best_metric": self.best_metric.text if self.best_metric else None,
                "best_mode": self.cfg.eval.best_mode,
            },
            "data": self._data_layout(),
            "rng": gather_rng_states(self.env, self.device),  # one entry per rank
            "meters": {"loss": self.loss_meter.state_dict()},
            "metrics": to_plain(dict(self.state.last_metrics)),
            "config": to_plain(config_to_dict(self.cfg)),
            "versions": library_versions(),
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (every process loads the same file)."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"] or not self.scaler.is_enabled():  # empty when saved without fp16
            self.scaler.load_state_dict(payload["scaler"])
        saved = payload["train_state"]
        self.state = TrainState(
            epoch=saved["epoch"],
            global_step=saved["global_step"],
            batch_in_epoch=saved["batch_in_epoch"],
            best_value=saved["best_value"],
            best_epoch=saved["best_epoch"],
            last_metrics=dict(payload["metrics"]),
        )
        best_rule = (self.best_metric.text if self.best_metric else None, self.cfg.eval.best_mode)
        if saved["best_value"] is not None and (saved["best_metric"], saved["best_mode"]) != best_rule:
            self.log.warning(
                f"eval.best_metric/best_mode changed from {saved['best_metric']} ({saved['best_mode']}) to "
                f"{best_rule[0]} ({best_rule[1]}): the next evaluation starts best.pt afresh."
            )
            self.state.best_value = self.state.best_epoch = None
        changed = position_mismatch(payload["data"], self._data_layout()) if self.state.batch_in_epoch else None
        if changed:
            self.log.warning(f"{changed} since the checkpoint: epoch {self.state.epoch + 1} restarts from its start.")
            self.state.batch_in_epoch = 0
        else:
            self.loss_meter.load_state_dict(payload["meters"]["loss"], self.device)
        # Last: nothing above draws random numbers, and nothing may between here and the next step.
        if not restore_own_rng_state(payload["rng"], self.env, self.device):
            self.log.warning(
                f"The checkpoint holds the random streams of {len(payload['rng'])} process(es), this run has "
                f"{self.env.world_size}: they restart from train.seed + rank + step (not bitwise reproducible)."
            )
            seed_everything(self.cfg.train.seed + self.env.rank + self.state.global_step)

    def _data_layout(self) -> dict[str, int]:
        """What ``batch_in_epoch`` counts in: continuing mid-epoch needs all of it unchanged."""
        return {
            "batch_size": self.cfg.train.batch_size,
            "grad_accum_steps": self.cfg.train.grad_accum_steps,
            "world_size": self.env.world_size,
            "train_size": len(self.train_set),  # type: ignore[arg-type]
            "seed": self.cfg.train.seed,
        }

    def resume(self, source: str | Path) -> Path | None:
        """Continue from a checkpoint; returns the file used, or ``None`` when there was none.

        ``"auto"``: the newest valid checkpoint of this run directory; damaged ones are skipped and named.
        A path: that file, which must be valid.
        """
        path, payload = (str(source), None) if source != "auto" else self._find_resumable()
        if path is None:
            self._info(f"--resume auto: no checkpoint in {self.run_dir}; starting afresh")
            return None
        if payload is None:
            payload = load_checkpoint(path)  # every process reads and verifies the file rank 0 chose
        self.load_state_dict(payload)
        changes = config_changes(payload["config"], to_plain(config_to_dict(self.cfg)))
        if changes:
            self.log.warning("Resuming with a config that differs from the checkpoint's: " + "; ".join(changes))
        dropped = 0
        if self.is_writer:
            assert self.run_dir is not None
            # A killed run logged steps after this checkpoint; the resumed run logs them again, once.
            self.metrics_writer.close()
            dropped = trim_metrics_log(self.run_dir / "metrics.jsonl", self.state.global_step)
            self.metrics_writer = MetricsWriter(self.run_dir, enabled=True, purge_step=self.state.global_step + 1)
            self.metrics_writer.write("resume", self.state.epoch + 1, self.state.global_step, {"checkpoint": path}, "")
        self._info(
            f"Resumed from '{path}' at {self._position()}, step {self.state.global_step}"
            + (f" (dropped {dropped} metrics.jsonl records written after it)" if dropped else "")
        )
        return Path(path)

    def _find_resumable(self) -> tuple[str | None, dict[str, Any] | None]:
        """Rank 0 scans the checkpoint directory; every process learns the chosen path (rank 0 its payload)."""
        if self.checkpoints is None:
            raise CheckpointError("--resume auto needs a run directory to look in (run.dir=DIR).")
        found, payload, error = None, None, None
        if self.is_writer:
            for stale in self.checkpoints.remove_stale_temp_files():
                self.log.warning(f"Removed '{stale}', left by a process killed while saving.")
            try:
                hit = self.checkpoints.find_resumable()
            except CheckpointError as err:
                error = str(err)
            else:
                if hit is not None:
                    found, payload, _ = str(hit[0]), hit[1], hit[2]
        found, error = D.broadcast_object((found, error), self.env)
        if error is not None:
            raise CheckpointError(error)
        return found, payload

    def _position(self) -> str:
        if self.state.batch_in_epoch:
            return f"epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch}/{self.batches_per_epoch}"
        return f"the end of epoch {self.state.epoch}" if self.state.epoch else "the start"

    def _save_checkpoints(self, epoch: int, improved: bool) -> None:
        """Epoch end: last.pt, epoch_NNNN.pt every checkpoint.every_epochs (rotated), best.pt if improved."""
        if self.checkpoints is None:
            return
        payload = self.state_dict()  # every process: it gathers the RNG states
        if not self.is_writer:
            return
        best = improved and self.best_metric is not None and self.state.best_value is not None
        self.checkpoints.save_epoch_end(payload, epochs_done=epoch + 1, best=best)
        if best:
            assert self.best_metric is not None and self.state.best_value is not None
            unit = self.task.metric_units().get(next(iter(sorted(self.best_metric.names))), "")
            self._info(
                f"Saved best model ({self.best_metric.text} = {self.state.best_value:.3f}"
                f"{' ' + unit if unit else ''}) to {self.checkpoints.directory / BEST}"
            )

    def _maybe_save_latest(self) -> None:
        """``last.pt`` every ``checkpoint.latest_every_steps`` optimizer steps inside an epoch."""
        at_epoch_end = self.state.batch_in_epoch == self.batches_per_epoch
        if self.checkpoints is not None and self.checkpoints.should_save_latest(self.state.global_step, at_epoch_end):
            self._save_latest()

    def _save_latest(self) -> Path | None:
        if self.checkpoints is None:
            return None
        payload = self.state_dict()  # every process: it gathers the RNG states
        return self.checkpoints.save_latest(payload) if self.is_writer else None

    def _stop_on_signal(self, *, save: bool) -> NoReturn:
        """Write ``last.pt`` at this step boundary (unless the epoch end just did) and stop every process."""
        if save:
            path = self._save_latest()
        else:
            path = self.checkpoints.directory / LAST if self.checkpoints is not None and self.is_writer else None
        self.stop_request.wait_for_all()  # no process exits (and gets the others killed) while rank 0 writes
        assert self.stop_request.agreed is not None
        stop = TrainingInterrupted(self.stop_request.agreed, path, self._position(), self.state.global_step)
        if self.env.is_main:
            self.log.warning(str(stop))
        raise stop

    def init_from(self, path: str | Path, *, strict: bool = True) -> WeightsReport:
        """Load model weights only (to fine-tune), reporting missing / unexpected / shape-mismatched keys.

        Raises:
            CheckpointError: with ``strict``, on any mismatch (nothing is loaded then).
        """
        report = copy_model_weights(self.model, path, strict=strict, map_location=self.device)
        (self._info if report.is_exact else self.log.warning)(f"Initialised the model: {report.describe()}")
        return report

    def load_model_weights(self, path: str | Path) -> None:
        """Load only the model weights of a checkpoint, strictly (for ``trainwell eval``)."""
        copy_model_weights(self.model, path, strict=True, map_location=self.device)


def build_task(cfg: ExperimentConfig) -> Task:
    """Instantiate the task named by ``task.class_path`` with its typed sections."""
    from trainwell.config.loader import task_class_of

    return task_class_of(cfg)(cfg.task, cfg.data)
