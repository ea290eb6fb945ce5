"""Typed schema of an experiment file: one dataclass per section, each field documented.

These names are a public contract (other tools read ``config.yaml`` from run directories): add keys
freely, never rename one. The ``task:`` and ``data:`` sections are typed by the task's own
``Config``/``DataConfig`` subclasses, chosen from ``task.class_path`` when the file is loaded.

Every section checks its own value ranges in ``problems()``, beside the fields it checks; the loader
reports the first problem with the key and the source (file or override).

Intervals (``train.log_every``, ``eval.every``, ``checkpoint.every``, ``checkpoint.latest_every``) take
optimizer steps (``500``) or epochs (``"1ep"``, ``"0.2ep"``: a fifth of an epoch, resolved from the real
loader length and world size and printed in the start banner); ``0`` switches one off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from trainwell.config.checkpoint import CheckpointConfig, interval_problem
from trainwell.config.distributed import DistributedConfig, combination_problems
from trainwell.config.expressions import parse_metric_expression
from trainwell.config.log import LogConfig
from trainwell.config.training import EarlyStopConfig, EmaConfig, ProfileConfig, parse_duration_s

Problem = tuple[str, str]
"""``(key, what is wrong)`` for a value out of range."""

MISSING = "???"
"""The value of a required key nobody set (OmegaConf's marker: loading a file without it is an error)."""


@dataclass
class TaskConfig:
    """The ``task:`` section. A task subclasses this with its own typed keys."""

    class_path: str = MISSING
    """Import path of the task class, ``package.module:ClassName``."""


@dataclass
class DataConfig:
    """The ``data:`` section. A task may subclass this to add its own keys (sizes, paths, seeds)."""

    num_workers: int = 0
    """DataLoader worker processes per training process (0 = load in the main process)."""
    pin_memory: bool = True
    """Pin host memory for faster host-to-GPU copies (ignored on CPU)."""
    persistent_workers: bool = True
    """Keep workers alive between epochs (only when num_workers > 0; off when the task has on_epoch_start)."""
    drop_last: bool = False
    """Drop each epoch's last, incomplete training batch (per process)."""
    disable_augmentation_last_epochs: int = 0
    """Train the last N epochs without augmentation (OpenPCDet's ``HOOK.DisableAugmentationHook.NUM_LAST_EPOCHS``):
    the engine calls ``Task.set_augmentation`` before every epoch, logs the switch, and a
    resumed run is in the same state (it depends on the epoch only). 0 = never."""

    def problems(self) -> Iterator[Problem]:
        if self.num_workers < 0:
            yield "data.num_workers", "must be ≥ 0"
        if self.disable_augmentation_last_epochs < 0:
            yield "data.disable_augmentation_last_epochs", "must be ≥ 0"


@dataclass
class TrainConfig:
    """``train:`` — the optimisation loop."""

    epochs: int = 10
    """Passes over the training set (with ``max_steps`` set, the epochs follow from the step budget)."""
    batch_size: int = 32
    """Samples per process per micro-batch. Global batch = batch_size × world size × grad_accum_steps."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all processes; when set, ``batch_size`` = this / (world size ×
    grad_accum_steps), which must divide: the same config trains alike on any number of processes."""
    max_steps: int | None = None
    """Budget of optimizer steps: the run ends there and the schedule spans exactly these steps; the number of
    epochs becomes ceil(max_steps / steps per epoch) and ``epochs`` is not used (iteration-based training)."""
    seed: int = 0
    """Seeds python, numpy and torch; the training order is a function of (seed, epoch)."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision through ``torch.autocast``; ``fp16`` also uses a GradScaler."""
    clip_grad_norm: float | None = None
    """Clip the total gradient norm to this value (after unscaling); null = no clipping."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    log_every: int | str = 50
    """Optimizer steps (or ``"0.2ep"``) between log lines (the only steps on which loss values reach the host)."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``."""
    progress_bar: Literal["auto", "on", "off"] = "auto"
    """``auto``: a bar on a terminal, plain periodic lines otherwise (CI, log files)."""
    num_threads: int | None = None
    """PyTorch intra-op threads of each process; null: the cores available divided by the processes on this
    machine (DataLoader workers always use 1). Too many threads on a busy machine make steps much slower."""
    compile: bool | str = False
    """``torch.compile`` the model for the training forward: ``true`` (inductor) or a backend name (``eager``,
    ``aot_eager``); checkpoints hold the plain module's weights, so resume and export are unchanged."""
    channels_last: bool = False
    """Image models on CUDA: the model and every 4-D floating input batch in ``channels_last`` memory format
    (faster convolutions with AMP on tensor cores)."""
    profile: ProfileConfig | None = None
    """``{wait, warmup, active}``: profile those optimizer steps with ``torch.profiler`` (see ProfileConfig)."""
    max_time: str | None = None
    """Wall-clock budget (``"2h30m"``, ``"45m"``, ``"90s"``), counted from the start of the process and summed over
    resumes (``train_state.elapsed_s``): the run stops at the optimizer-step boundary where the next step (the next
    ``log_every`` steps, multi-process) would pass it, then evaluates and writes ``last.pt``; ``status.json`` says
    ``time_budget``. null: no budget."""
    ema: EmaConfig | None = None
    """An exponential moving average of the weights (``{decay, every, start_step}``); null: none. Saved in
    checkpoints (part ``ema``); ``eval.use_ema`` evaluates it; ``trainwell export --ema`` exports it."""

    def problems(self) -> Iterator[Problem]:
        if self.epochs < 1:
            yield "train.epochs", "must be at least 1"
        if self.batch_size < 1:
            yield "train.batch_size", "must be at least 1"
        if self.global_batch_size is not None and self.global_batch_size < 1:
            yield "train.global_batch_size", "must be null or at least 1"
        if self.grad_accum_steps < 1:
            yield "train.grad_accum_steps", "must be at least 1"
        if self.max_steps is not None and self.max_steps < 1:
            yield "train.max_steps", "must be null or ≥ 1"
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            yield "train.clip_grad_norm", "must be > 0 (or null for no clipping)"
        if self.num_threads is not None and self.num_threads < 1:
            yield "train.num_threads", "must be null or ≥ 1"
        yield from interval_problem("train.log_every", self.log_every)
        if self.ema is not None:
            yield from self.ema.problems()
        if self.max_time is not None:
            try:
                parse_duration_s(self.max_time)
            except ValueError as err:
                yield "train.max_time", str(err)
        if self.log_every in (0, "0ep"):
            yield "train.log_every", "must be > 0 (log lines are where the doctor looks)"
        if self.profile is not None:
            yield from self.profile.problems()


@dataclass
class ParamGroupConfig:
    """One entry of ``optim.param_groups``: parameters whose name matches get their own LR and decay."""

    match: str = MISSING
    """A glob (``backbone.*``) or, prefixed ``re:``, a regular expression on parameter names (``named_parameters``)."""
    name: str | None = None
    """Name of the group in logs (``Train/lr/<name>``); default: the pattern."""
    lr_mult: float = 1.0
    """LR of this group = ``optim.lr × lr_mult`` (the schedule scales it like the others)."""
    weight_decay: float | None = None
    """Weight decay of this group; null: ``optim.weight_decay``."""


@dataclass
class OptimConfig:
    """``optim:`` — the optimizer (a task may build its own instead: ``Task.build_optimizer``)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    """Peak learning rate (reached at the end of warmup)."""
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam/AdamW betas."""
    momentum: float = 0.9
    """SGD momentum."""
    eps: float = 1e-8
    """Adam/AdamW epsilon."""
    fused: bool | None = None
    """Fused Adam/AdamW kernels; null: on when every parameter is a CUDA floating tensor (with fp16 the GradScaler
    then hands the overflow flag to the kernel instead of reading it on the host)."""
    param_groups: list[ParamGroupConfig] = field(default_factory=list)
    """Groups by parameter name; the first matching entry wins; the rest form the group ``default``."""
    no_decay_norm_bias: bool = False
    """No weight decay on biases, normalisation layers and embeddings (their own group ``no_decay``)."""

    def problems(self) -> Iterator[Problem]:
        if self.lr <= 0:
            yield "optim.lr", "must be > 0"
        if self.weight_decay < 0:
            yield "optim.weight_decay", "must be ≥ 0"
        if len(self.betas) != 2:
            yield "optim.betas", "must have two values"
        for i, group in enumerate(self.param_groups):
            if group.lr_mult < 0:
                yield f"optim.param_groups[{i}].lr_mult", "must be ≥ 0"
            if group.weight_decay is not None and group.weight_decay < 0:
                yield f"optim.param_groups[{i}].weight_decay", "must be ≥ 0 (or null for optim.weight_decay)"


@dataclass
class ScheduleConfig:
    """``schedule:`` — the learning-rate curve, a pure function of the optimizer step (``engine/schedule.py``)."""

    warmup_steps: int = 0
    """Warmup from 0 to ``optim.lr`` over this many optimizer steps (not used by ``onecycle``)."""
    warmup: Literal["linear", "cosine"] = "linear"
    """Shape of the warmup."""
    warmup_starts_at_zero: bool = False
    """The first update uses LR 0 and update k uses k/warmup_steps, as ``transformers``'
    ``get_linear_schedule_with_warmup`` (step for step); default: update k uses (k+1)/warmup_steps."""
    warmup_start_lr: float | None = None
    """The warmup rises from this learning rate (for a group at ``optim.lr``; groups with an ``lr_mult`` start at
    the same fraction of their peak) instead of 0. OpenPCDet's ``LR_WARMUP`` / ``WARMUP_EPOCH`` (its
    ``CosineWarmupLR``): ``warmup: cosine``, ``warmup_starts_at_zero: true``, ``warmup_start_lr: LR / DIV_FACTOR``,
    ``warmup_steps: "<WARMUP_EPOCH>ep"`` resolved to steps by you (WARMUP_EPOCH × iterations per epoch)."""
    step_on_skipped: bool = False
    """Advance the schedule on an fp16 step that GradScaler skipped (inf/NaN gradients). Default ``false``: the LR
    follows the *applied* updates, so a run with many skipped steps does not end its schedule early. ViECap and
    OpenPCDet call ``scheduler.step()`` unconditionally: ``true`` reproduces them step for step."""
    decay: Literal["linear", "cosine", "constant", "step", "onecycle"] = "cosine"
    """Shape after warmup: down to ``min_lr_ratio × optim.lr`` at the last step (``linear``, ``cosine``),
    ``constant``, ``step`` (× ``step_factor`` at each of ``step_milestones``, floored at ``min_lr_ratio``) or
    ``onecycle`` (OpenPCDet's ``adam_onecycle``: cosine up from lr/div_factor over ``pct_start``, then down to
    lr/div_factor/1e4, with Adam's β1 (SGD's momentum) cycling between ``onecycle_moms``)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak (``step``: the floor)."""
    step_milestones: list[int | str] = field(default_factory=list)
    """``step`` decay: where the LR is multiplied by ``step_factor``: steps (``30000``) or epochs (``"35ep"``)."""
    step_factor: float = 0.1
    """``step`` decay: the factor at each milestone (OpenPCDet's LR_DECAY)."""
    pct_start: float = 0.4
    """``onecycle``: fraction of the steps spent rising to the peak."""
    div_factor: float = 10.0
    """``onecycle``: the cycle starts at lr / div_factor (and ends at lr / div_factor / 1e4)."""
    onecycle_moms: list[float] = field(default_factory=lambda: [0.95, 0.85])
    """``onecycle``: β1 (or momentum) at the start and at the peak (it rises back by the end)."""

    def problems(self) -> Iterator[Problem]:
        if self.warmup_steps < 0:
            yield "schedule.warmup_steps", "must be ≥ 0"
        if self.warmup_start_lr is not None and not (
            self.warmup_start_lr >= 0.0 and math.isfinite(self.warmup_start_lr)
        ):
            yield "schedule.warmup_start_lr", "must be a finite learning rate ≥ 0"
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            yield "schedule.min_lr_ratio", "must be in [0, 1]"
        if not 0.0 < self.pct_start < 1.0:
            yield "schedule.pct_start", "must be in (0, 1)"
        if self.div_factor <= 0:
            yield "schedule.div_factor", "must be > 0"
        if len(self.onecycle_moms) != 2:
            yield "schedule.onecycle_moms", "must have two values"
        if self.decay == "step" and not self.step_milestones:
            yield "schedule.step_milestones", "must list at least one milestone for decay: step"
        for i, milestone in enumerate(self.step_milestones):
            yield from interval_problem(f"schedule.step_milestones[{i}]", milestone)


@dataclass
class EvalConfig:
    """``eval:`` — validation during training and ``trainwell eval``."""

    every_epochs: int = 1
    """Evaluate every this many epochs (and always after the last one); 0 = only at the end."""
    every: int | str | None = None
    """Evaluate every N optimizer steps or ``"0.5ep"``; when set it replaces ``every_epochs``."""
    batch_size: int = 256
    """Samples per process per evaluation batch."""
    best_metric: str | None = None
    """Expression over metric names selecting ``best.pt``, e.g. ``(mpjpe + pa_mpjpe) / 2``."""
    best_mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher ``best_metric`` is better."""
    early_stop: EarlyStopConfig | None = None
    """Stop after ``patience`` evaluations without an improvement of ``eval.best_metric`` by ``min_delta``; the run
    writes ``last.pt`` and ``status.json`` says ``early_stopped``. Resuming it stops again at once unless the config
    now allows more (a larger ``patience``): the count of evaluations without improvement is kept."""
    use_ema: bool = False
    """Evaluate (and choose ``best.pt`` by) the EMA weights of ``train.ema`` instead of the trained weights; before
    ``train.ema.start_step`` the trained weights are evaluated. ``trainwell eval``/``predict`` then load the EMA
    weights of the checkpoint."""

    def problems(self) -> Iterator[Problem]:
        if self.every_epochs < 0:
            yield "eval.every_epochs", "must be ≥ 0"
        if self.batch_size < 1:
            yield "eval.batch_size", "must be at least 1"
        yield from interval_problem("eval.every", self.every)
        if self.early_stop is not None:
            yield from self.early_stop.problems()
            if self.best_metric is None:
                yield "eval.early_stop", "needs eval.best_metric (the value whose improvement it watches)"
        if self.best_metric is not None:
            try:
                parse_metric_expression(self.best_metric)
            except ValueError as err:
                yield "eval.best_metric", str(err)


@dataclass
class DiagnosticsConfig:
    """``diagnostics:`` — the training doctor and the non-finite policy."""

    enabled: bool = True
    """Run the always-on checks (cheap: they read values at logging steps only)."""
    nonfinite: Literal["stop", "skip"] = "stop"
    """On a non-finite loss or gradient: stop (save the batch, name the component) or skip the step.
    ``skip`` reads one flag per step from the device (a host sync); ``stop`` reads nothing extra."""
    debug_loss: bool = False
    """Print loss internals for the first batches (also: environment TRAINWELL_DEBUG_LOSS=1, recorded here)."""
    ignore: list[str] = field(default_factory=list)
    """Finding ids (or id prefixes such as ``grad``) not to report, e.g. ``[model.eval_mode]`` for frozen BatchNorm."""

    def problems(self) -> Iterator[Problem]:
        return iter(())


@dataclass
class RunConfig:
    """``run:`` — where outputs go."""

    name: str = "run"
    """Run name; the default directory is ``runs/<name>/<timestamp>``."""
    dir: str | None = None
    """Explicit run directory (used as is; reused by ``--resume auto``)."""

    def problems(self) -> Iterator[Problem]:
        return iter(())


@dataclass
class ExperimentConfig:
    """A whole experiment file."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def problems(self) -> Iterator[Problem]:
        """Every value-range problem of every section (the task's own sections may add ``problems()`` too).

        Non-finite numbers come first, in every section: ``nan`` fails every comparison, so ``lr <= 0`` alone
        would let ``optim.lr=.nan`` through to train on NaN weights.
        """
        for name in ("task", "data", "train", "optim", "schedule", "eval", "checkpoint", "distributed"):
            yield from _nonfinite_problems(getattr(self, name), name)
        for section in (self.data, self.train, self.optim, self.schedule, self.eval, self.checkpoint):
            yield from section.problems()
        yield from self.diagnostics.problems()
        yield from self.distributed.problems()
        yield from self.log.problems()
        if self.checkpoint.keep_best and self.eval.best_metric is None:
            yield "checkpoint.keep_best", "needs eval.best_metric (the value the checkpoints are ranked by)"
        sharded = self.checkpoint.in_shards(self.distributed.strategy)
        yield from combination_problems(
            self.distributed.strategy, sharded, self.train.amp, self.train.ema, self.checkpoint
        )
        if self.eval.use_ema and self.train.ema is None:
            yield "eval.use_ema", "needs train.ema (the average to evaluate): set train.ema or eval.use_ema=false"
        task_problems = getattr(self.task, "problems", None)
        if callable(task_problems):
            yield from task_problems()


def _nonfinite_problems(value: Any, key: str) -> Iterator[Problem]:
    """``nan`` / ``inf`` anywhere under ``value`` (dataclass fields, list items, dict values), by dotted key."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key, "must be a finite number"
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _nonfinite_problems(getattr(value, f.name), f"{key}.{f.name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _nonfinite_problems(item, f"{key}[{i}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _nonfinite_problems(item, f"{key}.{name}")


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (written to ``<run>/config.yaml``; loadable again)."""
    return str(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain containers (for checkpoints and ``config.yaml``)."""
    return dataclasses.asdict(cfg)
