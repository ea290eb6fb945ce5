"""The training loop: one explicit ``fit`` that calls each component by name.

Where does the learning rate change? ``Trainer._optimizer_step``. Where is the model switched to
train/eval? ``Trainer._train_one_epoch`` and ``evaluate``. Where do loss values reach the host?
``Trainer._log_train`` — once per ``train.log_every`` optimizer steps, never in between.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trainwell.config.loader import config_to_dict, config_to_yaml
from trainwell.config.schema import ExperimentConfig
from trainwell.engine import distributed as D
from trainwell.engine.best import is_better, parse_metric_expression
from trainwell.engine.checkpoint import atomic_save, load_checkpoint
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.engine.logging import (
    DeviceMeter,
    MetricsWriter,
    ProgressBar,
    format_value,
    setup_console_logging,
)
from trainwell.engine.rundir import make_run_dir
from trainwell.engine.schedule import build_scheduler
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
        # Per-rank seed: dropout masks differ across ranks; data order comes from the sampler.
        seed_everything(cfg.train.seed + self.env.rank)

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
        self.ddp_model: nn.Module = self.model
        if self.env.is_distributed:
            if cfg.distributed.sync_batchnorm:
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.distributed.find_unused_parameters,
            )
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.sampler = D.TrainSampler(len(self.train_set), seed=cfg.train.seed, env=self.env)  # type: ignore[arg-type]
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.train.batch_size,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=task.collate_fn(),
            pin_memory=cfg.data.pin_memory and self.device.type == "cuda",
            persistent_workers=cfg.data.persistent_workers and cfg.data.num_workers > 0,
            drop_last=False,
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

    # -- helpers ------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for the configured precision (the current ``torch.amp`` API)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
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
        """Train for ``train.epochs`` (or ``train.max_steps``), evaluating and checkpointing."""
        cfg = self.cfg
        self._start_banner()
        started = time.perf_counter()
        try:
            for epoch in range(self.state.epoch, cfg.train.epochs):
                if self.should_stop():
                    break
                epoch_started = time.perf_counter()
                train_loss = self._train_one_epoch(epoch)
                self.state.epoch = epoch + 1
                self.state.batch_in_epoch = 0
                last = self.state.epoch == cfg.train.epochs or self.should_stop()
                result = self.evaluate(epoch) if self.should_evaluate(epoch, last) else None
                improved = self._maybe_update_best(result, epoch)
                self._save_checkpoints(epoch, improved)
                self._epoch_summary(epoch, train_loss, result, time.perf_counter() - epoch_started)
        finally:
            self.metrics_writer.close()
        self._end_banner(time.perf_counter() - started)
        return FitResult(run_dir=self.run_dir, state=self.state, metrics=self.state.last_metrics)

    def _train_one_epoch(self, epoch: int) -> float:
        """One pass over this process's shard; returns the epoch's mean total loss."""
        cfg = self.cfg.train
        self.ddp_model.train()
        self.sampler.set_epoch(epoch, start=self.state.batch_in_epoch * cfg.batch_size)
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
                else contextlib.nullcontext()
            )
            if self.device.type != "cpu":
                batch = move_to_device(batch, self.device)
            with no_sync:
                names, stacked = self._forward(batch)
                total = stacked.sum()
                if group_size > 1:
                    # k micro-batches must give the gradient of one k-times larger batch.
                    total = total / group_size
                self.scaler.scale(total).backward()
            self.loss_meter.add(names, stacked)
            self.state.batch_in_epoch = micro + 1
            bar.update()
            if is_update:
                should_log = (self.state.global_step + 1) % cfg.log_every == 0
                optimizer_step(
                    model=self.model,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    scaler=self.scaler,
                    clip_grad_norm=cfg.clip_grad_norm,
                    stats=self.stats,
                    measure_norm=should_log,
                )
                self.state.global_step += 1
                if should_log:
                    self._log_train(epoch, bar)
                if self.should_stop():
                    break
        bar.close()
        sums, count = self.loss_meter.read_total()
        return sum(sums.values()) / max(1, count)

    def _forward(self, batch: Any) -> tuple[tuple[str, ...], torch.Tensor]:
        """Named loss components for one micro-batch, stacked into one ``(K,)`` tensor."""
        with self.autocast():
            losses = self.task.compute_losses(self.ddp_model, batch)
        if not losses:
            raise RuntimeError(f"{type(self.task).__name__}.compute_losses returned no loss components.")
        # fp32 for the sum and the meters: bf16 sums of several terms lose digits.
        stacked = torch.stack([value.float().reshape(()) for value in losses.values()])
        return tuple(losses), stacked

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
        return result

    # -- logging ------------------------------------------------------------------------------
    def _log_train(self, epoch: int, bar: ProgressBar) -> None:
        """One log line: interval-averaged loss breakdown, LR, grad norm, throughput (one host sync)."""
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
        if not self.env.is_main:
            return
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
        record = {"loss": total, **{f"loss/{n}": v for n, v in components.items()}, "lr": lr, **interval}
        self.metrics_writer.write("train", epoch + 1, self.state.global_step, record, "Train")

    def _epoch_summary(self, epoch: int, train_loss: float, result: EvalResult | None, seconds: float) -> None:
        units = self.task.metric_units()
        parts = [f"Epoch {epoch + 1}/{self.cfg.train.epochs}", f"train loss {format_value(train_loss)}"]
        if result is not None:
            shown = ", ".join(
                f"{name} {format_value(value)}{' ' + units[name] if name in units else ''}"
                for name, value in result.metrics.items()
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
            self._info("Final val: " + ", ".join(f"{k} {format_value(v)}" for k, v in self.state.last_metrics.items()))
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
        """Everything needed to continue this run, as tensors and plain containers only."""
        return {
            "model": self.model.state_dict(),
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
            },
            "metrics": dict(self.state.last_metrics),
            "config": config_to_dict(self.cfg),
            "versions": {"torch": str(torch.__version__)},
        }

    def _save_checkpoints(self, epoch: int, improved: bool) -> None:
        if not self.is_writer:
            return
        assert self.run_dir is not None
        ckpt_dir = self.run_dir / "checkpoints"
        payload = self.state_dict()
        atomic_save(payload, ckpt_dir / "last.pt")
        if improved and self.best_metric is not None and self.state.best_value is not None:
            atomic_save(payload, ckpt_dir / "best.pt")
            unit = self.task.metric_units().get(next(iter(sorted(self.best_metric.names))), "")
            self._info(
                f"Saved best model ({self.best_metric.text} = {self.state.best_value:.3f}"
                f"{' ' + unit if unit else ''}) to {ckpt_dir / 'best.pt'}"
            )

    def load_model_weights(self, path: str | Path) -> None:
        """Load only the model weights of a checkpoint (for ``trainwell eval``)."""
        payload = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(payload["model"])


def build_task(cfg: ExperimentConfig) -> Task:
    """Instantiate the task named by ``task.class_path`` with its typed sections."""
    from trainwell.config.loader import task_class_of

    return task_class_of(cfg)(cfg.task, cfg.data)


LogFn = Callable[[str], None]
