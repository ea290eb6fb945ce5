"""The lines a run prints at its start and end (what it will do, and what it did)."""

from __future__ import annotations

from pathlib import Path

from trainwell.config.schema import ExperimentConfig
from trainwell.engine.checkpoint.state import TrainState
from trainwell.engine.logging import format_value
from trainwell.engine.plan import RunPlan

RULE = "=" * 80


def start_lines(
    cfg: ExperimentConfig,
    plan: RunPlan,
    *,
    run_dir: Path | None,
    device: str,
    world_size: int,
    num_params: int,
    num_threads: int,
    num_train: int,
    num_val: int,
) -> list[str]:
    """The start banner: task, device, precision, batch arithmetic, data sizes, budget and intervals."""
    global_batch = cfg.train.batch_size * world_size * cfg.train.grad_accum_steps
    return [
        RULE,
        f"trainwell run '{cfg.run.name}' — task {cfg.task.class_path}",
        f"run directory: {run_dir}",
        f"device {device}, {world_size} process(es), {num_threads} thread(s) each, amp {cfg.train.amp}, "
        f"model {num_params / 1e6:.2f} M parameters" + (", torch.compile" if cfg.train.compile else ""),
        f"batch: {cfg.train.batch_size} per process × {world_size} process(es) × {cfg.train.grad_accum_steps} "
        f"accumulation = global batch {global_batch}"
        + (" (train.global_batch_size)" if cfg.train.global_batch_size is not None else ""),
        f"data: {num_train} train / {num_val} val samples",
        *plan.describe(cfg),
        RULE,
    ]


def end_lines(
    cfg: ExperimentConfig, state: TrainState, *, seconds: float, best_path: Path | None, best_text: str | None
) -> list[str]:
    """The end banner: time, steps, the best checkpoint and the final validation metrics."""
    lines = [RULE, f"Finished run '{cfg.run.name}' in {seconds:.1f} s ({state.global_step} steps)"]
    if state.best_value is not None and best_text is not None:
        lines.append(
            f"Best {best_text} = {format_value(state.best_value)} at epoch {state.best_epoch} (step "
            f"{state.best_step}); checkpoint: {best_path}"
        )
    if state.last_metrics:
        shown = ", ".join(f"{k} {format_value(v)}" for k, v in state.last_metrics.items() if "/" not in k)
        lines.append(f"Final val: {shown}")
    lines.append(RULE)
    return lines
