"""A run's parts as plain objects (:class:`Run`), made once by :func:`trainwell.engine.build.build_run`.

The :class:`~trainwell.engine.loop.Trainer` receives a ``Run`` and holds the loop only; resuming and
initialising from weights are functions of a ``Run`` (``engine/resuming.py``). Nothing here inherits behaviour.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from trainwell.config.schema import ExperimentConfig, config_to_dict
from trainwell.engine import distributed as D
from trainwell.engine.banner import end_lines, start_lines
from trainwell.engine.best import BestTracker
from trainwell.engine.checkpoint import CheckpointManager, RunState, TrainState
from trainwell.engine.checkpoint.files import to_plain
from trainwell.engine.checkpoint.finite import refuse_nonfinite_state, state_tensors
from trainwell.engine.checkpoint.resume import library_versions
from trainwell.engine.checkpoint.state import RngPart
from trainwell.engine.data import TrainBatches
from trainwell.engine.ema import ModelEma
from trainwell.engine.logging import MetricsWriter, epoch_line, setup_console_logging, train_line
from trainwell.engine.losses import LossCollector
from trainwell.engine.meters import DeviceMeter, StepStats
from trainwell.engine.nonfinite import NonFiniteLossError, NonFinitePolicy
from trainwell.engine.observer import RunObserver
from trainwell.engine.outputs import RunOutputs
from trainwell.engine.plan import RunPlan
from trainwell.engine.rundir import write_status
from trainwell.engine.signals import StopRequest, TrainingInterrupted
from trainwell.engine.stopping import RunStopping
from trainwell.engine.switches import AugmentationSwitch, WallClockCheckpoints
from trainwell.engine.task import Task
from trainwell.engine.trackers import TrackerRecorder
from trainwell.records.status import RunStateName


class Callback(Protocol):
    """Called by the loop after every optimizer step with the :class:`Run` (a seam for tools and tests; it reads
    the run's parts and must not change them)."""

    def on_step_end(self, run: Any) -> None: ...


def metrics_writer(
    cfg: ExperimentConfig, trackers: TrackerRecorder, run_dir: Path | None, purge_step: int | None = None
) -> MetricsWriter:
    """``metrics.jsonl``, TensorBoard if ``log.trackers`` names it, and the other trackers."""
    tensorboard = "tensorboard" in cfg.log.trackers
    return MetricsWriter(run_dir, enabled=True, purge_step=purge_step, tensorboard=tensorboard, trackers=trackers)


def commit_outputs(out: RunOutputs, cfg: ExperimentConfig, env: D.DistEnv, trackers: TrackerRecorder) -> None:
    """Start writing the run directory (``train.log``, ``metrics.jsonl``, the config); once, rank 0."""
    if out.committed:
        return
    name = out.commit(cfg, lambda run_dir: metrics_writer(cfg, trackers, run_dir))
    log = setup_console_logging(out.run_dir, env.is_main)
    if name != "config.yaml":
        log.info(f"Continuing the run in '{out.run_dir}'; this run's config is in {name}")


@dataclass(frozen=True)
class FitResult:
    """What ``Trainer.fit`` hands back: the run directory, the final state and the last validation metrics."""

    run_dir: Path | None
    state: TrainState
    metrics: dict[str, float]


@dataclass(eq=False)
class Run:
    """Every part of one run, in the order :func:`~trainwell.engine.build.build_run` makes them."""

    cfg: ExperimentConfig
    task: Task
    env: D.DistEnv
    device: torch.device
    num_threads: int
    built_at_s: float
    """``train.max_time`` counts from here: before datasets and model are built."""
    out: RunOutputs
    log: logging.Logger
    trackers: TrackerRecorder
    callbacks: list[Callback]
    train_set: Dataset[Any]
    val_set: Dataset[Any]
    model: nn.Module
    """The bare module: optimised, saved and evaluated."""
    ddp_model: nn.Module
    """``model`` under DDP (or ``model`` itself on one process): its ``no_sync`` skips gradient all-reduces."""
    train_model: nn.Module
    """What training forwards run through: ``ddp_model``, compiled under ``train.compile``."""
    optimizer: Optimizer
    group_names: list[str]
    batches: TrainBatches
    loader: DataLoader[Any]
    loader_generator: torch.Generator
    plan: RunPlan
    augmentation: AugmentationSwitch
    wall_clock: WallClockCheckpoints
    scheduler: Any  # a torch LR scheduler (the task's own, or engine/schedule.py's)
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    state: TrainState
    meter: DeviceMeter
    stats: StepStats
    losses: LossCollector
    scheduler_moves_momentum: bool
    best: BestTracker
    stopping: RunStopping
    checkpoint_dir: Path
    checkpoints: CheckpointManager | None
    rng_part: RngPart
    run_state: RunState
    """What a checkpoint holds: ``run_state.parts`` (``engine/checkpoint/state.py``)."""
    ema: ModelEma | None
    stop_request: StopRequest
    nonfinite: NonFinitePolicy
    doctor: RunObserver

    def commit_outputs(self) -> None:
        """Start writing the run directory, once (see :func:`commit_outputs`)."""
        commit_outputs(self.out, self.cfg, self.env, self.trackers)

    def status(self, state: RunStateName, **details: Any) -> None:
        """Write ``status.json`` (rank 0) and tell the trackers: ``running`` starts them, any other state ends them."""
        if self.out.is_writer:
            self.commit_outputs()  # a run continuing its directory without resume() starts writing at fit()
            write_status(self.out.run_dir, state, step=self.state.global_step, **details)
            self.trackers.follow(state, self.state, params=lambda: to_plain(config_to_dict(self.cfg)))

    @contextlib.contextmanager
    def recording_outcome(self) -> Iterator[None]:
        """Around ``fit``'s epochs: signal handlers, the observer's start and end, ``status.json`` saying how the
        run ended (``stopped_by_signal``, ``nonfinite_stop``, ``crashed``, or the stopping reason / ``finished``),
        and the run directory's lock given back — on every exit path."""
        self.stop_request.install()
        self.doctor.on_fit_start(resumed=self.state.global_step > 0 or self.state.mid_epoch)
        self.status("running")
        try:
            yield
        except TrainingInterrupted as stop:
            self.status("stopped_by_signal", signal=stop.signum)
            raise
        except NonFiniteLossError as err:
            self.status("nonfinite_stop", error=str(err))
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: the user's abort, not a crash
            self.status("stopped_by_signal", signal=int(signal.SIGINT), aborted=True)
            raise
        except BaseException as err:
            self.status("crashed", error=f"{type(err).__name__}: {err}")
            raise
        else:
            self.status(self.stopping.reason or "finished", **self.stopping.details())
        finally:
            self.stop_request.uninstall()
            self.doctor.finish([self.nonfinite.finding] if self.nonfinite.finding else [])
            self.close()  # metrics writers, then the run directory's lock

    def save_checkpoint(self, *, periodic: str | None = None, best: bool = False) -> Path | None:
        """``last.pt`` (+ a periodic file, + ``best.pt``); every process calls it (it gathers the RNG states)."""
        if self.checkpoints is None:
            return None
        payload = self.checkpoint_payload()  # refuses a NaN/Inf state: the previous last.pt stays the newest
        self.wall_clock.saved()
        last = self.checkpoint_dir / self.checkpoints.last_name if self.out.is_writer else None
        if self.checkpoints.sharded:  # every process writes its shards (engine/checkpoint/sharded.py)
            with self.stop_request.saving():
                scored = self.best.take_scored()
                self.checkpoints.save_sharded(payload, self.env, periodic=periodic, best=best, scored=scored)
            return last
        if not self.out.is_writer:
            return None
        with self.stop_request.saving():  # a second Ctrl-C waits for the file to be complete
            self.checkpoints.save(payload, periodic=periodic, best=best, scored=self.best.take_scored())
        return last

    def written_checkpoint(self, which: str) -> Path | None:
        """Where ``last`` or ``best`` is (``last.pt``, or ``last.dcp`` when sharded) — on the process writing it."""
        if self.checkpoints is None or not self.out.is_writer:
            return None
        return self.checkpoint_dir / (self.checkpoints.last_name if which == "last" else self.checkpoints.best_name)

    def fail_setup(self, err: BaseException) -> None:
        """A run that could not start (a refused resume…): ``crashed`` in a directory it writes; the lock goes back."""
        self.out.record_crash(err)
        self.close()

    def close(self) -> None:
        """Publish a checkpoint still being written in the background, then give the run directory's lock back
        (every exit path)."""
        try:
            if self.checkpoints is not None:
                self.checkpoints.finish_pending()
        finally:
            self.out.close()

    def checkpoint_payload(self) -> dict[str, Any]:
        """What a checkpoint holds: every part's state and the extras; never a non-finite state (collective)."""
        if self.checkpoints is not None:  # stop rather than save NaN/Inf: the previous last.pt stays the newest
            refuse_nonfinite_state(
                state_tensors(self.model, self.optimizer, self.meter.tensors()),
                env=self.env,
                nonfinite=self.nonfinite,
                step=self.state.global_step,
                last=self.checkpoint_dir / self.checkpoints.last_name,
                last_saved_step=self.checkpoints.last_saved_step,
            )
        return {**self.run_state.state_dict(), **self.payload_extras()}

    def payload_extras(self) -> dict[str, Any]:
        """What a checkpoint carries besides the parts: the config (for ``export`` and resume checks), versions."""
        return {"config": to_plain(config_to_dict(self.cfg)), "versions": library_versions()}

    def maybe_update_ema(self) -> None:
        """After an optimizer step: start or update ``train.ema`` when due (``engine/ema.py``)."""
        if self.ema is not None:
            self.ema.maybe_update(self.state.global_step)

    def eval_model(self) -> nn.Module:
        """What validation scores: the EMA weights under ``eval.use_ema`` once the average started, else the model."""
        if self.cfg.eval.use_ema and self.ema is not None and self.ema.started:
            return self.ema.module
        return self.model

    def position(self) -> str:
        """Where in the run the state stands, in words (for logs and errors)."""
        if self.state.mid_epoch:
            return f"epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch}/{self.plan.batches_per_epoch}"
        return f"the end of epoch {self.state.epoch}" if self.state.epoch else "the start"

    def start_banner(self) -> list[str]:
        """The start banner's lines (``engine/banner.py``) and a note on batches no process takes."""
        lines = start_lines(
            self.cfg,
            self.plan,
            run_dir=self.out.run_dir,
            device=str(self.device),
            world_size=self.env.world_size,
            num_params=sum(p.numel() for p in self.model.parameters()),
            num_threads=self.num_threads,
            num_train=len(self.train_set),  # type: ignore[arg-type]
            num_val=len(self.val_set),  # type: ignore[arg-type]
        )
        dropped = self.batches.dropped_tail(0)
        if dropped:
            lines.insert(
                -1, f"data: the task's batch sampler gives {dropped} batch(es) per epoch that no process takes"
            )
        return lines

    def epoch_line(self, epoch: int, train_loss: float, metrics: dict[str, float] | None) -> str:
        """The end-of-epoch summary line (``engine/logging.py``), metrics with the task's units."""
        units = {name: spec.unit for name, spec in self.task.metric_specs().items()}
        lr = self.scheduler.get_last_lr()[0]
        return epoch_line(
            epoch=epoch, epochs=self.plan.epochs, train_loss=train_loss, metrics=metrics, units=units, lr=lr
        )

    def end_banner(self, seconds: float) -> list[str]:
        """The end banner's lines: time, steps, the best checkpoint, the final metrics."""
        best_path = self.checkpoint_dir / self.checkpoints.best_name if self.checkpoints is not None else None
        return end_lines(self.cfg, self.state, seconds=seconds, best_path=best_path, best_text=self.best.rule)

    def format_train_line(
        self,
        epoch: int,
        record: dict[str, Any],
        components: dict[str, float],
        logged: dict[str, float],
        lrs: dict[str, float],
    ) -> str:
        """One training log line (``engine/logging.py``) at the current step."""
        return train_line(
            epoch=epoch,
            step=self.state.global_step,
            batch=self.state.batch_in_epoch,
            batches=self.plan.batches_per_epoch,
            record=record,
            components=components,
            logged=logged,
            lrs=lrs,
            clipping=self.cfg.train.clip_grad_norm is not None,
        )
