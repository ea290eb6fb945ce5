"""``build_run(cfg, task) -> Run``: every part of a run, made once, in a fixed order.

The order matters: process group and threads → run directory and logs → datasets → model (DDP, compile) →
optimizer → batches and loader → plan (steps, intervals) → schedule → checkpoint parts → policy and observer.
The :class:`~trainwell.engine.loop.Trainer` is the loop over the parts (``Trainer(build_run(cfg, task)).fit()``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from trainwell.config.schema import MISSING, ExperimentConfig
from trainwell.config.training import parse_duration_s
from trainwell.engine import distributed as D
from trainwell.engine.amp import amp_dtype
from trainwell.engine.best import BestTracker, check_best_metric
from trainwell.engine.checkpoint import CheckpointManager, RunState, TrainState
from trainwell.engine.checkpoint.parts import ModelState, OptimizerState
from trainwell.engine.checkpoint.state import RngPart, ScalerPart
from trainwell.engine.checkpoint.topk import TopKCheckpoints
from trainwell.engine.data import TrainBatches, build_train_loader
from trainwell.engine.ema import ModelEma, build_ema
from trainwell.engine.fsdp import is_sharded, select_units
from trainwell.engine.logging import get_logger, setup_console_logging
from trainwell.engine.losses import LossCollector
from trainwell.engine.meters import DeviceMeter, StepStats
from trainwell.engine.nonfinite import NonFinitePolicy
from trainwell.engine.observer import ObserverFactory, ObserverSetup, null_observer
from trainwell.engine.optim import build_optimizer, group_names
from trainwell.engine.outputs import RunOutputs
from trainwell.engine.plan import RunPlan, with_global_batch
from trainwell.engine.run import Callback, Run, commit_outputs
from trainwell.engine.rundir import REFUSE
from trainwell.engine.runtime import configure_threads, cpu_amp_warning, seed_everything
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.signals import StopRequest
from trainwell.engine.stopping import EarlyStopping, RunStopping, TimeBudget, monotonic_s
from trainwell.engine.switches import AugmentationSwitch, WallClockCheckpoints
from trainwell.engine.task import Task
from trainwell.engine.trackers import Tracker, TrackerRecorder


def build_run(
    cfg: ExperimentConfig,
    task: Task,
    *,
    env: D.DistEnv | None = None,
    write_outputs: bool = True,
    callbacks: Sequence[Callback] = (),
    trackers: Sequence[Tracker] = (),
    existing_run: str = REFUSE,
    observer: ObserverFactory = null_observer,
) -> Run:
    """Make every part of one run (see the module docstring for the order).

    ``existing_run``: what to do when ``run.dir`` already holds a run — ``"refuse"`` (default), ``"continue"``
    (then :func:`~trainwell.engine.resuming.resume`) or ``"overwrite"`` (move it aside); see
    ``docs/run_directory.md``. ``trackers``: built by the CLI (``trainwell.trackers``), so the engine imports no
    tracker package. ``observer``: makes the run's observer (``trainwell.api.build_run`` attaches the doctor).

    Raises:
        ConfigError, RunDirError, DataError, …: nothing is trained; a run directory already written says
            ``crashed`` with the message, and its lock is given back.
    """
    built_at_s = monotonic_s()  # train.max_time counts from here: before datasets and model are built
    check_best_metric(cfg.eval.best_metric, task.metric_names(), type(task).__name__)  # before anything is written
    env = env or D.env_from_torchrun()
    cfg = _with_task_section(cfg, task)
    cfg = with_global_batch(cfg, env.world_size)  # train.batch_size per process, before config.yaml is written
    device = D.select_device(cfg.train.device, env)
    num_threads = configure_threads(cfg.train.num_threads)  # before the first op
    D.init_process_group(env, device, cfg.distributed.backend, cfg.distributed.timeout_s)
    # The same seed on every process while the datasets and the model are built (a dataset that draws from
    # the global RNG must be the same everywhere, or evaluation shards would not tile it); per rank after.
    seed_everything(cfg.train.seed)
    out, recorder = _open_outputs(cfg, env, write_outputs, existing_run, trackers)
    try:
        core = _build_core(cfg, task, env, device, out)
        return _assemble(cfg, task, env, device, core, out, recorder, callbacks, observer, num_threads, built_at_s)
    except BaseException as err:
        out.record_crash(err)  # "crashed" (in a directory it writes), and the lock goes back
        out.close()
        raise


def _with_task_section(cfg: ExperimentConfig, task: Task) -> ExperimentConfig:
    """``cfg`` with the task it trains recorded: a config made in Python without a ``task:`` section gets the task's
    own (``config.yaml`` then names the task, and ``trainwell doctor`` / ``report`` can read the run)."""
    if cfg.task.class_path != MISSING:
        return cfg
    section = task.cfg
    if section.class_path == MISSING:
        section = dataclasses.replace(section, class_path=f"{type(task).__module__}:{type(task).__qualname__}")
    return dataclasses.replace(cfg, task=section)


def _open_outputs(
    cfg: ExperimentConfig, env: D.DistEnv, write_outputs: bool, existing_run: str, trackers: Sequence[Tracker]
) -> tuple[RunOutputs, TrackerRecorder]:
    """Open the run directory (:class:`~trainwell.engine.outputs.RunOutputs`); a new run writes at once."""
    out = RunOutputs.open(cfg, env, write_outputs=write_outputs, existing_run=existing_run)
    log = setup_console_logging(None, env.is_main, hold_for_file=out.is_writer)
    recorder = TrackerRecorder(list(trackers), out.run_dir if out.is_writer else None)
    missing = sorted(set(cfg.log.trackers) - {"tensorboard"} - {t.name for t in trackers})
    if missing and env.is_main:
        log.warning(
            f"log.trackers names {', '.join(missing)}, but no such tracker was handed to build_run: build them "
            f"with trainwell.trackers.build_trackers(cfg) (the CLI does)."
        )
    moved = out.opened.moved_aside if out.opened else None
    if moved is not None:
        log.info(f"--overwrite: moved the previous run in '{out.run_dir}' to '{moved}'")
    if out.is_writer and not out.continuing:
        try:
            commit_outputs(out, cfg, env, recorder)
        except BaseException:
            out.close()  # the first write failed (disk full, permissions): give the lock back, delete its file
            raise
    return out, recorder


class _Core(NamedTuple):
    """The parts training needs first: data, model, optimizer, loader, plan, schedule, precision."""

    train_set: Dataset[Any]
    val_set: Dataset[Any]
    model: nn.Module
    ddp_model: nn.Module
    train_model: nn.Module
    optimizer: Optimizer
    group_names: list[str]
    batches: TrainBatches
    loader: DataLoader[Any]
    loader_generator: torch.Generator
    plan: RunPlan
    scheduler: Any
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler


def _build_core(cfg: ExperimentConfig, task: Task, env: D.DistEnv, device: torch.device, out: RunOutputs) -> _Core:
    """Datasets → model → optimizer → batches and loader → plan → schedule → loss scaler."""
    task.run_dir = out.run_dir
    train_set, val_set = task.build_datasets()
    model, ddp_model, train_model = _build_model(cfg, task, device, env)
    # Per-rank seed: dropout masks and worker augmentations differ across ranks; the data order does not.
    seed_everything(cfg.train.seed + env.rank)
    optimizer = task.build_optimizer(model, cfg.optim) or build_optimizer(model, cfg.optim)
    batches, loader, loader_generator = build_train_loader(cfg, task, train_set, env, device)
    plan = RunPlan.resolve(cfg, len(batches.batches(0)))
    task.num_epochs = plan.epochs
    scheduler = task.build_scheduler(optimizer, plan.total_steps, cfg.schedule) or build_scheduler(
        optimizer, cfg.schedule, plan.total_steps, plan.milestones, peak_lr=cfg.optim.lr
    )
    # GradScaler only for fp16: bf16 has fp32's exponent range and needs no loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    return _Core(
        train_set,
        val_set,
        model,
        ddp_model,
        train_model,
        optimizer,
        group_names(optimizer),
        batches,
        loader,
        loader_generator,
        plan,
        scheduler,
        amp_dtype(cfg.train.amp),
        scaler,
    )


def _build_model(
    cfg: ExperimentConfig, task: Task, device: torch.device, env: D.DistEnv
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(model, ddp_model, train_model)``: the bare module is optimised, saved and evaluated; the DDP one runs
    training forwards (its ``no_sync`` skips all-reduces); ``train_model`` is it compiled under ``train.compile``.
    Under ``distributed.strategy=fsdp`` the model and the "DDP" one are the same module, sharded by FSDP2."""
    model = task.build_model().to(device)
    if cfg.train.channels_last:  # before wrapping: DDP's buckets and FSDP's shards see the final layout
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    patterns = cfg.distributed.fsdp.units

    def units(module: nn.Module) -> Sequence[nn.Module]:
        chosen = task.shard_units(module) if patterns is None else None
        return chosen if chosen is not None else select_units(module, patterns)

    model, ddp_model = D.wrap_model(model, device, env, cfg.distributed, units, amp_dtype(cfg.train.amp))
    # torch.compile wraps the training forward only: checkpoints keep the bare module's parameter names.
    compile_ = cfg.train.compile
    backend = compile_ if isinstance(compile_, str) else "inductor"
    train_model: nn.Module = torch.compile(ddp_model, backend=backend) if compile_ else ddp_model  # type: ignore[assignment]
    return model, ddp_model, train_model


def _assemble(
    cfg: ExperimentConfig,
    task: Task,
    env: D.DistEnv,
    device: torch.device,
    core: _Core,
    out: RunOutputs,
    recorder: TrackerRecorder,
    callbacks: Sequence[Callback],
    observer: ObserverFactory,
    num_threads: int,
    built_at_s: float,
) -> Run:
    """The state, its checkpointing, stopping rules, the non-finite policy and the observer, around ``core``."""
    log = get_logger()  # the same logger object before and after the run directory is written
    state = TrainState(data_layout=_data_layout(cfg, env, len(core.train_set)))  # type: ignore[arg-type]
    meter = DeviceMeter(device)
    best, stopping = _build_stopping(cfg, env, state, core.plan, built_at_s, log)
    checkpoint_dir = out.run_dir / "checkpoints" if out.run_dir is not None else Path("checkpoints")
    top_k = _top_k(cfg, best, checkpoint_dir, log)
    in_shards = cfg.checkpoint.in_shards(cfg.distributed.strategy)
    checkpoints = _checkpoints(cfg, env, checkpoint_dir, top_k, log) if out.run_dir else None
    rng_part = RngPart(env, device)
    ema = build_ema(core.model, cfg.train.ema)  # after channels_last: the copy keeps the layout
    curve = getattr(core.scheduler, "curve", None)
    run = Run(
        cfg=cfg,
        task=task,
        env=env,
        device=device,
        num_threads=num_threads,
        built_at_s=built_at_s,
        out=out,
        log=log,
        trackers=recorder,
        callbacks=list(callbacks),
        **core._asdict(),
        augmentation=AugmentationSwitch(task, cfg.data.disable_augmentation_last_epochs, core.plan.epochs, log),
        wall_clock=WallClockCheckpoints(cfg.checkpoint.every_minutes, env),
        state=state,
        meter=meter,
        stats=StepStats(device=device),
        losses=LossCollector(type(task).__name__),
        scheduler_moves_momentum=curve is not None and curve.momentum(0) is not None,
        best=best,
        stopping=stopping,
        checkpoint_dir=checkpoint_dir,
        checkpoints=checkpoints,
        rng_part=rng_part,
        run_state=_run_state(core, state, meter, ema, task, rng_part, in_shards),
        ema=ema,
        stop_request=StopRequest(env),
        nonfinite=_nonfinite_policy(cfg, out, log, core, task),
        doctor=observer(_observer_setup(cfg, task, env, device, core.plan, out, log)),
    )
    _start_warnings(run)
    return run


def _build_stopping(
    cfg: ExperimentConfig, env: D.DistEnv, state: TrainState, plan: RunPlan, built_at_s: float, log: logging.Logger
) -> tuple[BestTracker, RunStopping]:
    """The best-checkpoint rule, early stopping on it, and the time budget (``engine/stopping.py``)."""
    early = EarlyStopping(cfg.eval.early_stop, cfg.eval.best_mode, state) if cfg.eval.early_stop else None
    best = BestTracker(cfg.eval.best_metric, cfg.eval.best_mode, state, early_stop=early)
    max_time_s = parse_duration_s(cfg.train.max_time) if cfg.train.max_time is not None else None
    budget = TimeBudget(max_time_s, state, env, check_every=plan.log_every.steps, started_s=built_at_s)
    return best, RunStopping(early, budget, rule=best.rule, log=log.warning)


def _top_k(
    cfg: ExperimentConfig, best: BestTracker, checkpoint_dir: Path, log: logging.Logger
) -> TopKCheckpoints | None:
    """``checkpoint.keep_best``: ranked by the best-checkpoint rule (needs ``eval.best_metric``)."""
    if not cfg.checkpoint.keep_best or best.metric is None:
        return None
    k, mode = cfg.checkpoint.keep_best, cfg.eval.best_mode
    sharded = cfg.checkpoint.in_shards(cfg.distributed.strategy)
    return TopKCheckpoints(checkpoint_dir, k, best.metric, mode, log=log.warning, sharded=sharded)


def _checkpoints(
    cfg: ExperimentConfig, env: D.DistEnv, directory: Path, top_k: TopKCheckpoints | None, log: logging.Logger
) -> CheckpointManager:
    """The run's checkpoint files (``engine/checkpoint/manager.py``): single files, or sharded directories."""
    sharded = cfg.checkpoint.in_shards(cfg.distributed.strategy)
    checkpoints = CheckpointManager(directory, cfg.checkpoint, log=log.warning, top_k=top_k, sharded=sharded)
    if sharded and cfg.checkpoint.async_save and env.is_distributed:
        # Background saves run collectives in their own thread: on a group of their own (every process creates it).
        checkpoints.process_group = torch.distributed.new_group(backend="gloo")
    return checkpoints


def _data_layout(cfg: ExperimentConfig, env: D.DistEnv, train_size: int) -> dict[str, int]:
    """What ``batch_in_epoch`` counts in: continuing mid-epoch needs all of it unchanged."""
    return {
        "batch_size": cfg.train.batch_size,
        "grad_accum_steps": cfg.train.grad_accum_steps,
        "world_size": env.world_size,
        "train_size": train_size,
        "seed": cfg.train.seed,
    }


def _run_state(
    core: _Core,
    state: TrainState,
    meter: DeviceMeter,
    ema: ModelEma | None,
    task: Task,
    rng_part: RngPart,
    in_shards: bool,
) -> RunState:
    """The checkpoint's parts, each saving and loading itself (``engine/checkpoint/state.py``)."""
    run_state = RunState()
    parts = run_state.parts
    parts["model"] = core.model  # the bare module: no DDP "module." prefix
    parts["optimizer"] = core.optimizer
    if is_sharded(core.model) or in_shards:  # FSDP or checkpoint.format=sharded: torch.distributed.checkpoint's API
        parts["model"] = ModelState(core.model, full=not in_shards)
        parts["optimizer"] = OptimizerState(core.model, core.optimizer, full=not in_shards)
    parts["scheduler"] = core.scheduler
    parts["scaler"] = ScalerPart(core.scaler)
    parts["train_state"] = state
    parts["meters"] = meter
    if ema is not None:
        ema.maybe_start(0)  # start_step 0: the initial weights (restarted by --init-from)
        parts["ema"] = ema
        run_state.optional.add("ema")  # a checkpoint from before train.ema was set: it starts afresh
    if callable(getattr(task, "state_dict", None)) and callable(getattr(task, "load_state_dict", None)):
        parts["task"] = task  # type: ignore[assignment]
    parts["rng"] = rng_part  # last: nothing may draw random numbers after it loads
    return run_state


def _nonfinite_policy(
    cfg: ExperimentConfig, out: RunOutputs, log: logging.Logger, core: _Core, task: Task
) -> NonFinitePolicy:
    """``diagnostics.nonfinite``: what a NaN/Inf loss does (``engine/nonfinite.py``)."""
    return NonFinitePolicy(
        cfg.diagnostics.nonfinite,
        amp=cfg.train.amp,
        enabled=cfg.diagnostics.enabled,
        run_dir=out.run_dir if out.is_writer else None,
        warn=lambda message: log.warning(f"trainwell: {message}"),
        dataset=core.train_set,
        batches=core.batches,
        collate_fn=task.collate_fn(),
    )


def _observer_setup(
    cfg: ExperimentConfig,
    task: Task,
    env: D.DistEnv,
    device: torch.device,
    plan: RunPlan,
    out: RunOutputs,
    log: logging.Logger,
) -> ObserverSetup:
    return ObserverSetup(
        cfg=cfg,
        task=task,
        env=env,
        device_type=device.type,
        total_steps=plan.total_steps,
        log_every_steps=max(1, plan.log_every.steps),
        run_dir=out.run_dir if out.is_writer else None,
        log=log,
    )


def _start_warnings(run: Run) -> None:
    """Warnings a user should read before the first step: slow CPU autocast, no ``best.pt``."""
    warning = cpu_amp_warning(run.device, run.cfg.train.amp)
    if warning and run.env.is_main:
        run.log.warning(f"trainwell: {warning}")
    if run.cfg.eval.best_metric is None and run.out.is_writer:
        names = ", ".join(run.task.metric_specs()) or "the names your evaluator's compute() returns"
        run.log.warning(
            "trainwell: eval.best_metric is not set, so this run writes no best.pt (last.pt and the periodic "
            f"checkpoints only): set eval.best_metric to one of {names} (or an expression of them) and "
            "eval.best_mode to min or max."
        )
