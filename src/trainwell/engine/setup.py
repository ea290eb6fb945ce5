"""The components of a run, built once in a fixed order, and their bookkeeping (banners, resume checks).

The order matters: process group and threads → run directory and logs → datasets → model (DDP, compile) →
optimizer → batches and loader → plan (steps, intervals) → schedule → checkpoint parts → policy and doctor.
:class:`~trainwell.engine.loop.Trainer` is the loop over these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from trainwell.config.schema import ExperimentConfig, config_to_dict
from trainwell.config.training import parse_duration_s
from trainwell.doctor.checks import RunContext
from trainwell.doctor.live import TrainingDoctor
from trainwell.engine import distributed as D
from trainwell.engine.amp import amp_dtype
from trainwell.engine.banner import end_lines, start_lines
from trainwell.engine.best import BestTracker, check_best_metric
from trainwell.engine.checkpoint import LAST, CheckpointManager, RunState, TrainState, load_checkpoint
from trainwell.engine.checkpoint.files import to_plain
from trainwell.engine.checkpoint.finite import refuse_nonfinite_state, state_tensors
from trainwell.engine.checkpoint.resume import (
    config_changes,
    find_resumable,
    library_versions,
    position_mismatch,
    refuse_mismatch,
    trim_metrics_log,
    upgrade_checked,
)
from trainwell.engine.checkpoint.state import RngPart, ScalerPart
from trainwell.engine.checkpoint.topk import TopKCheckpoints
from trainwell.engine.checkpoint.weights import WeightsReport, compare_model_state, load_model_weights, model_state_of
from trainwell.engine.data import build_train_loader
from trainwell.engine.ema import build_ema
from trainwell.engine.logging import MetricsWriter, setup_console_logging, train_line
from trainwell.engine.losses import LossCollector
from trainwell.engine.meters import DeviceMeter, StepStats
from trainwell.engine.nonfinite import NonFinitePolicy
from trainwell.engine.optim import GroupHyperparameters, build_optimizer, group_names
from trainwell.engine.outputs import RunOutputs
from trainwell.engine.plan import RunPlan
from trainwell.engine.rundir import REFUSE, write_status
from trainwell.engine.runtime import configure_threads, cpu_amp_warning, seed_everything
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.signals import StopRequest
from trainwell.engine.stopping import EarlyStopping, RunStopping, TimeBudget, monotonic_s
from trainwell.engine.switches import AugmentationSwitch, WallClockCheckpoints
from trainwell.engine.task import Task
from trainwell.engine.trackers import Tracker, TrackerRecorder


class Callback(Protocol):
    """Called by the loop after every optimizer step (a seam for tools and tests; it must not change state)."""

    def on_step_end(self, trainer: Any) -> None: ...


class RunComponents:
    """Builds and holds every component of one run (see the module docstring for the order)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        task: Task,
        *,
        env: D.DistEnv | None = None,
        write_outputs: bool = True,
        callbacks: Sequence[Callback] = (),
        trackers: Sequence[Tracker] = (),
        existing_run: str = REFUSE,
    ) -> None:
        """``existing_run``: what to do when ``run.dir`` already holds a run — ``"refuse"`` (default),
        ``"continue"`` (then call :meth:`resume`) or ``"overwrite"`` (move it aside); see ``docs/run_directory.md``.
        ``trackers``: built by the CLI (``trainwell.trackers``), so the engine imports no tracker package."""
        self.built_at_s = monotonic_s()  # train.max_time counts from here: before datasets and model are built
        self.cfg, self.task, self.callbacks = cfg, task, list(callbacks)
        self.trackers = list(trackers)  # built by the CLI (trainwell.trackers): the engine imports no tracker
        self.task_name = type(task).__name__
        check_best_metric(cfg.eval.best_metric, task.metric_names(), self.task_name)  # before anything is written
        self.env = env or D.env_from_torchrun()
        self.device = D.select_device(cfg.train.device, self.env)
        self.num_threads = configure_threads(cfg.train.num_threads)  # before the first op
        D.init_process_group(self.env, self.device, cfg.distributed.backend, cfg.distributed.timeout_s)
        # The same seed on every process while the datasets and the model are built (a dataset that draws from
        # the global RNG must be the same everywhere, or evaluation shards would not tile it); per rank after.
        seed_everything(cfg.train.seed)
        self._open_outputs(write_outputs, existing_run)
        try:
            self._build(cfg, task)
        except BaseException as err:
            self.fail_setup(err)
            raise

    def _build(self, cfg: ExperimentConfig, task: Task) -> None:
        """Everything after the run directory: data, model, optimizer, plan, schedule, state, policy, doctor."""
        task.run_dir = self.out.run_dir
        self.train_set, self.val_set = task.build_datasets()
        self._build_model()
        # Per-rank seed: dropout masks and worker augmentations differ across ranks; the data order does not.
        seed_everything(cfg.train.seed + self.env.rank)
        self.optimizer = task.build_optimizer(self.model, cfg.optim) or build_optimizer(self.model, cfg.optim)
        self.group_names = group_names(self.optimizer)
        self._build_data()
        self.plan = RunPlan.resolve(cfg, len(self.batches.batches(0)))
        task.num_epochs = self.plan.epochs
        self.augmentation = AugmentationSwitch(
            task, cfg.data.disable_augmentation_last_epochs, self.plan.epochs, self.log
        )
        self.wall_clock = WallClockCheckpoints(cfg.checkpoint.every_minutes, self.env)
        self.scheduler = task.build_scheduler(self.optimizer, self.plan.total_steps, cfg.schedule) or build_scheduler(
            self.optimizer, cfg.schedule, self.plan.total_steps, self.plan.milestones, peak_lr=cfg.optim.lr
        )
        self.amp_dtype = amp_dtype(cfg.train.amp)
        # GradScaler only for fp16: bf16 has fp32's exponent range and needs no loss scaling.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self._build_state()
        self.stop_request = StopRequest(self.env)
        self.nonfinite = NonFinitePolicy(
            cfg.diagnostics.nonfinite,
            amp=cfg.train.amp,
            enabled=cfg.diagnostics.enabled,
            run_dir=self.out.run_dir if self.out.is_writer else None,
            warn=lambda message: self.log.warning(f"trainwell: {message}"),
            dataset=self.train_set,
            batches=self.batches,
            collate_fn=task.collate_fn(),
        )
        context = RunContext.from_config(
            cfg,
            total_steps=self.plan.total_steps,
            log_every=max(1, self.plan.log_every.steps),
            device=self.device.type,
            world_size=self.env.world_size,
        )
        run_dir = self.out.run_dir if self.out.is_writer else None
        self.doctor = TrainingDoctor(
            cfg.diagnostics, context=context, env=self.env, run_dir=run_dir, log=self.log, task=task
        )
        warning = cpu_amp_warning(self.device, cfg.train.amp)
        if warning and self.env.is_main:
            self.log.warning(f"trainwell: {warning}")
        if cfg.eval.best_metric is None and self.out.is_writer:
            names = ", ".join(task.metric_specs()) or "the names your evaluator's compute() returns"
            self.log.warning(
                "trainwell: eval.best_metric is not set, so this run writes no best.pt (last.pt and the periodic "
                f"checkpoints only): set eval.best_metric to one of {names} (or an expression of them) and "
                "eval.best_mode to min or max."
            )

    def _open_outputs(self, write_outputs: bool, existing_run: str) -> None:
        """Open the run directory (:class:`~trainwell.engine.outputs.RunOutputs`); a new run writes at once."""
        self.out = RunOutputs.open(self.cfg, self.env, write_outputs=write_outputs, existing_run=existing_run)
        self.log = setup_console_logging(None, self.env.is_main, hold_for_file=self.out.is_writer)
        self.tracker_recorder = TrackerRecorder(self.trackers, self.out.run_dir if self.out.is_writer else None)
        missing = sorted(set(self.cfg.log.trackers) - {"tensorboard"} - {t.name for t in self.trackers})
        if missing and self.env.is_main:
            self.log.warning(
                f"log.trackers names {', '.join(missing)}, but no such tracker was handed to the Trainer: build them "
                f"with trainwell.trackers.build_trackers(cfg) (the CLI does)."
            )
        moved = self.out.opened.moved_aside if self.out.opened else None
        if moved is not None:
            self.log.info(f"--overwrite: moved the previous run in '{self.out.run_dir}' to '{moved}'")
        if self.out.is_writer and not self.out.continuing:
            self.commit_outputs()

    def _metrics_writer(self, run_dir: Path | None, enabled: bool, purge_step: int | None = None) -> MetricsWriter:
        """``metrics.jsonl``, TensorBoard if ``log.trackers`` names it, and the other trackers."""
        return MetricsWriter(
            run_dir,
            enabled=enabled,
            purge_step=purge_step,
            tensorboard="tensorboard" in self.cfg.log.trackers,
            trackers=self.tracker_recorder,
        )

    def commit_outputs(self) -> None:
        """Start writing the run directory (``train.log``, ``metrics.jsonl``, the config); once, rank 0."""
        if self.out.committed:
            return
        name = self.out.commit(self.cfg, lambda run_dir: self._metrics_writer(run_dir, True))
        self.log = setup_console_logging(self.out.run_dir, self.env.is_main)
        if name != "config.yaml":
            self.log.info(f"Continuing the run in '{self.out.run_dir}'; this run's config is in {name}")

    def fail_setup(self, err: BaseException) -> None:
        """A run that could not be built: ``crashed`` (in a directory it writes), and the lock goes back."""
        self.out.record_crash(err)
        self.close()

    def close(self) -> None:
        """Give the run directory's lock back (every exit path)."""
        self.out.close()

    def _build_model(self) -> None:
        model = self.task.build_model().to(self.device)
        # ddp_model runs training forwards; the bare model is optimised, saved and evaluated.
        self.model, self.ddp_model = D.wrap_model(model, self.device, self.env, self.cfg.distributed)
        if self.cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # torch.compile wraps the training forward only: checkpoints keep the bare module's parameter names.
        compile_ = self.cfg.train.compile
        backend = compile_ if isinstance(compile_, str) else "inductor"
        self.train_model: nn.Module = torch.compile(self.ddp_model, backend=backend) if compile_ else self.ddp_model

    def _build_data(self) -> None:
        self.batches, self.loader, self.loader_generator = build_train_loader(
            self.cfg, self.task, self.train_set, self.env, self.device
        )

    def _build_state(self) -> None:
        self.state = TrainState(data_layout=self._data_layout())
        self.meter = DeviceMeter(self.device)
        self.stats = StepStats(device=self.device)
        self.losses = LossCollector(self.task_name)
        self._used_hyper: GroupHyperparameters | None = None  # the LR / β1 of the update a log line reports
        curve = getattr(self.scheduler, "curve", None)
        self.scheduler_moves_momentum = curve is not None and curve.momentum(0) is not None
        self._build_stopping()
        self.checkpoint_dir = self.out.run_dir / "checkpoints" if self.out.run_dir is not None else Path("checkpoints")
        self.checkpoints = (
            CheckpointManager(self.checkpoint_dir, self.cfg.checkpoint, log=self.log.warning, top_k=self._top_k())
            if self.out.run_dir
            else None
        )
        self.rng_part = RngPart(self.env, self.device)
        self.run_state = RunState()
        parts = self.run_state.parts
        parts["model"] = self.model  # the bare module: no DDP "module." prefix
        parts["optimizer"] = self.optimizer
        parts["scheduler"] = self.scheduler
        parts["scaler"] = ScalerPart(self.scaler)
        parts["train_state"] = self.state
        parts["meters"] = self.meter
        self.ema = build_ema(self.model, self.cfg.train.ema)  # after channels_last: the copy keeps the layout
        if self.ema is not None:
            self.ema.maybe_start(0)  # start_step 0: the initial weights (restarted by --init-from)
            parts["ema"] = self.ema
            self.run_state.optional.add("ema")  # a checkpoint from before train.ema was set: it starts afresh
        if callable(getattr(self.task, "state_dict", None)) and callable(getattr(self.task, "load_state_dict", None)):
            parts["task"] = self.task  # type: ignore[assignment]
        parts["rng"] = self.rng_part  # last: nothing may draw random numbers after it loads

    def _build_stopping(self) -> None:
        """The best-checkpoint rule, early stopping on it, and the time budget (``engine/stopping.py``)."""
        cfg = self.cfg
        early = EarlyStopping(cfg.eval.early_stop, cfg.eval.best_mode, self.state) if cfg.eval.early_stop else None
        self.best = BestTracker(cfg.eval.best_metric, cfg.eval.best_mode, self.state, early_stop=early)
        max_time_s = parse_duration_s(cfg.train.max_time) if cfg.train.max_time is not None else None
        budget = TimeBudget(
            max_time_s, self.state, self.env, check_every=self.plan.log_every.steps, started_s=self.built_at_s
        )
        self.stopping = RunStopping(early, budget, rule=self.best.rule, log=self.log.warning)

    def _top_k(self) -> TopKCheckpoints | None:
        """``checkpoint.keep_best``: ranked by the best-checkpoint rule (needs ``eval.best_metric``)."""
        if not self.cfg.checkpoint.keep_best or self.best.metric is None:
            return None
        k, mode = self.cfg.checkpoint.keep_best, self.cfg.eval.best_mode
        return TopKCheckpoints(self.checkpoint_dir, k, self.best.metric, mode, log=self.log.warning)

    def _data_layout(self) -> dict[str, int]:
        """What ``batch_in_epoch`` counts in: continuing mid-epoch needs all of it unchanged."""
        return {
            "batch_size": self.cfg.train.batch_size,
            "grad_accum_steps": self.cfg.train.grad_accum_steps,
            "world_size": self.env.world_size,
            "train_size": len(self.train_set),  # type: ignore[arg-type]
            "seed": self.cfg.train.seed,
        }

    # -- resuming and initialising ----------------------------------------------------------------
    def resume(self, source: str | Path) -> Path | None:
        """Continue from a checkpoint; returns the file used, or ``None`` when there was none.

        ``"auto"``: the newest valid checkpoint of this run directory; damaged ones are skipped and named.
        A path: that file, which must be valid.
        """
        path, payload = (
            (str(source), None) if source != "auto" else find_resumable(self.checkpoints, self.env, self.log.warning)
        )
        if path is None:
            self.log.info(f"--resume auto: no checkpoint in {self.out.run_dir}; starting afresh")
            if self.out.is_writer and not self.out.committed:  # records of an attempt that saved nothing
                trim_metrics_log(self.out.run_dir / "metrics.jsonl", 0)
            self.commit_outputs()
            return None
        payload = upgrade_checked(path, payload if payload is not None else load_checkpoint(path))
        current_layout = dict(self.state.data_layout)
        self._load_checked(path, payload)
        self.commit_outputs()  # the checkpoint fits: only now does this run write into the directory
        self.after_resume(payload, current_layout)
        self.log.info(f"Resumed from '{path}' at {self.position()}, step {self.state.global_step}")
        return Path(path)

    def _load_checked(self, path: str, payload: dict[str, Any]) -> None:
        """Every part of the checkpoint, after checking that its model tensors fit this model.

        Raises:
            CheckpointError: listing the missing / unexpected / reshaped tensors and the changed config keys.
        """
        changes = config_changes(payload.get("config", {}), to_plain(config_to_dict(self.cfg)))
        report = compare_model_state(self.model, model_state_of(payload, Path(path)), Path(path))
        if not report.is_exact:
            problem = f"its model does not match this run's model ({report.describe(limit=5)})"
            raise refuse_mismatch(problem, path, changes, self.out.run_dir)
        try:
            self.run_state.load_state_dict(payload)  # every part, the RNG streams last
        except (KeyError, ValueError, RuntimeError) as err:  # e.g. other optimizer parameter groups
            raise refuse_mismatch(f"its state does not fit this run ({err})", path, changes, self.out.run_dir) from None

    def init_from(self, path: str | Path, *, strict: bool = True) -> WeightsReport:
        """Load model weights only (to fine-tune), reporting missing / unexpected / shape-mismatched keys.

        Raises:
            CheckpointError: with ``strict``, on any mismatch (nothing is loaded then).
        """
        report = load_model_weights(
            self.model, path, strict=strict, map_location=self.device, foreign=self.task.foreign_weights
        )
        (self.log.info if report.is_exact else self.log.warning)(f"Initialised the model: {report.describe()}")
        if self.ema is not None:
            self.ema.restart(self.state.global_step)  # the average starts from the loaded weights, not the initial
        return report

    def refuse_nonfinite_state(self) -> None:
        """Before a checkpoint: stop rather than save NaN/Inf (:func:`.checkpoint.finite.refuse_nonfinite_state`)."""
        if self.checkpoints is None:
            return
        refuse_nonfinite_state(
            state_tensors(self.model, self.optimizer, self.meter.tensors()),
            env=self.env,
            nonfinite=self.nonfinite,
            step=self.state.global_step,
            last=self.checkpoint_dir / LAST,
            last_saved_step=self.checkpoints.last_saved_step,
        )

    def _status(self, state: str, **details: Any) -> None:
        if self.out.is_writer:
            self.commit_outputs()  # a run continuing its directory without resume() starts writing at fit()
            write_status(self.out.run_dir, state, step=self.state.global_step, **details)
            # The trackers' runs start with "running" (continued after a resume) and end at any other state.
            self.tracker_recorder.follow(state, self.state, params=lambda: to_plain(config_to_dict(self.cfg)))

    # -- bookkeeping -------------------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        """What a checkpoint holds: every part's state and the extras; never a non-finite state (collective)."""
        self.refuse_nonfinite_state()
        return {**self.run_state.state_dict(), **self.payload_extras()}

    def payload_extras(self) -> dict[str, Any]:
        """What a checkpoint carries besides the parts: the config (for ``export`` and resume checks), versions."""
        return {
            "config": to_plain(config_to_dict(self.cfg)),
            "versions": library_versions(),
        }

    def after_resume(self, payload: dict[str, Any], current_layout: dict[str, int]) -> None:
        """Checks after the parts loaded: the best rule, the position in the epoch, the RNG streams, the logs."""
        if self.ema is not None and "ema" not in payload:
            self.log.warning("The checkpoint holds no EMA (train.ema was off): the average starts from these weights.")
            self.ema.restart(self.state.global_step)
        changed = self.best.rule_changed()
        if changed:
            self.log.warning(changed)
        if self.out.is_writer and self.checkpoints is not None and self.checkpoints.top_k is not None:
            self.checkpoints.top_k.rebuild(up_to_step=self.state.global_step)  # from the files, by the current rule
        mismatch = position_mismatch(self.state.data_layout, current_layout) if self.state.mid_epoch else None
        if mismatch:
            self.log.warning(f"{mismatch} since the checkpoint: epoch {self.state.epoch + 1} restarts from its start.")
            self.state.batch_in_epoch = 0
            self.meter.reset()
        self.state.data_layout = current_layout
        if not self.rng_part.restored:
            self.log.warning(
                f"The checkpoint holds the random streams of {len(payload['rng'])} process(es), this run has "
                f"{self.env.world_size}: they restart from train.seed + rank + step (not bitwise reproducible)."
            )
            seed_everything(self.cfg.train.seed + self.env.rank + self.state.global_step)
        changes = config_changes(payload.get("config", {}), to_plain(config_to_dict(self.cfg)))
        if changes:
            self.log.warning("Resuming with a config that differs from the checkpoint's: " + "; ".join(changes))
        if self.out.is_writer and self.out.run_dir is not None:
            # A killed run logged steps after this checkpoint; the resumed run logs them again, once.
            self.out.metrics.close()
            dropped = trim_metrics_log(self.out.run_dir / "metrics.jsonl", self.state.global_step)
            self.out.metrics = self._metrics_writer(self.out.run_dir, True, purge_step=self.state.global_step + 1)
            self.out.metrics.write(
                "resume", self.state.epoch + 1, self.state.global_step, {"dropped_records": dropped}, ""
            )

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
        if self.state.mid_epoch:
            return f"epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch}/{self.plan.batches_per_epoch}"
        return f"the end of epoch {self.state.epoch}" if self.state.epoch else "the start"

    def start_banner(self) -> list[str]:
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

    def end_banner(self, seconds: float) -> list[str]:
        best_path = self.checkpoint_dir / "best.pt" if self.checkpoints is not None else None
        return end_lines(self.cfg, self.state, seconds=seconds, best_path=best_path, best_text=self.best.rule)

    def format_train_line(
        self,
        epoch: int,
        record: dict[str, Any],
        components: dict[str, float],
        logged: dict[str, float],
        lrs: dict[str, float],
    ) -> str:
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
