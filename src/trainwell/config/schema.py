"""Typed schema of an experiment file: one dataclass per section, each field documented.

These names are a public contract (other tools read ``config.yaml`` from run directories): add keys
freely, never rename one. The ``task:`` and ``data:`` sections are typed by the task's own
``Config``/``DataConfig`` subclasses, chosen from ``task.class_path`` when the file is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trainwell.engine.task import DataConfig, TaskConfig


@dataclass
class TrainConfig:
    """``train:`` — the optimisation loop."""

    epochs: int = 10
    """Passes over the training set (the run also stops at ``max_steps`` if that comes first)."""
    batch_size: int = 32
    """Samples per process per micro-batch. Global batch = batch_size × world size × grad_accum_steps."""
    max_steps: int | None = None
    """Optional budget of optimizer steps (iteration-based schedules, as in detection codebases)."""
    seed: int = 0
    """Seeds python, numpy and torch; the training order is a function of (seed, epoch)."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision through ``torch.autocast``; ``fp16`` also uses a GradScaler."""
    clip_grad_norm: float | None = None
    """Clip the total gradient norm to this value (after unscaling); null = no clipping."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    log_every: int = 50
    """Optimizer steps between log lines (the only steps on which loss values reach the host)."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``."""
    progress_bar: Literal["auto", "on", "off"] = "auto"
    """``auto``: a bar on a terminal, plain periodic lines otherwise (CI, log files)."""


@dataclass
class OptimConfig:
    """``optim:`` — the optimizer."""

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


@dataclass
class ScheduleConfig:
    """``schedule:`` — the learning-rate curve, a pure function of the optimizer step."""

    warmup_steps: int = 0
    """Linear warmup from 0 to ``optim.lr`` over this many optimizer steps."""
    decay: Literal["linear", "cosine", "constant"] = "cosine"
    """Shape after warmup, down to ``min_lr_ratio × optim.lr`` at the last step."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""


@dataclass
class EvalConfig:
    """``eval:`` — validation during training and ``trainwell eval``."""

    every_epochs: int = 1
    """Evaluate every this many epochs (and always after the last one); 0 = only at the end."""
    batch_size: int = 256
    """Samples per process per evaluation batch."""
    best_metric: str | None = None
    """Expression over metric names selecting ``best.pt``, e.g. ``(mpjpe + pa_mpjpe) / 2``."""
    best_mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher ``best_metric`` is better."""


@dataclass
class CheckpointConfig:
    """``checkpoint:`` — what is written to ``<run>/checkpoints``."""

    every_epochs: int = 1
    """Write ``epoch_NNNN.pt`` every this many epochs; 0 = never."""
    keep: int = 3
    """Newest periodic checkpoints kept; 0 = write none (``best.pt`` and ``last.pt`` are never rotated away)."""
    latest_every_steps: int = 0
    """Also write ``last.pt`` every this many optimizer steps inside an epoch; 0 = only at epoch end."""


@dataclass
class DiagnosticsConfig:
    """``diagnostics:`` — the training doctor."""

    enabled: bool = True
    """Run the always-on checks (cheap: they read values at logging steps only)."""
    nonfinite: Literal["stop", "skip"] = "stop"
    """On a non-finite loss or gradient: stop (save the batch, name the component) or skip the step.
    ``skip`` reads one flag per step from the device (a host sync); ``stop`` reads nothing extra."""
    debug_loss: bool = False
    """Print loss internals for the first batches (also: environment TRAINWELL_DEBUG_LOSS=1)."""
    ignore: list[str] = field(default_factory=list)
    """Finding ids (or id prefixes such as ``grad``) not to report, e.g. ``[model.eval_mode]`` for frozen BatchNorm."""


@dataclass
class DistributedConfig:
    """``distributed:`` — multi-process training under torchrun (ignored for one process)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """``auto``: NCCL on CUDA, gloo on CPU."""
    timeout_s: float = 600.0
    """A collective that waits longer than this ends the job with an error instead of a hang."""
    find_unused_parameters: bool = False
    """DDP option for models whose forward skips some parameters."""
    sync_batchnorm: bool = False
    """Convert BatchNorm layers to SyncBatchNorm."""


@dataclass
class RunConfig:
    """``run:`` — where outputs go."""

    name: str = "run"
    """Run name; the default directory is ``runs/<name>/<timestamp>``."""
    dir: str | None = None
    """Explicit run directory (used as is; reused by ``--resume auto``)."""


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
    run: RunConfig = field(default_factory=RunConfig)
