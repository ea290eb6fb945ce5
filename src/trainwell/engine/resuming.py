"""Continuing a run from its checkpoint, or initialising a run's model from weights: functions of a ``Run``.

Check first, write after: a resume whose checkpoint does not fit the model or the state leaves the run directory
as it was (``CheckpointError`` listing the tensors and the changed config keys); see ``docs/run_directory.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainwell.config.schema import config_to_dict
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.engine.checkpoint.files import to_plain
from trainwell.engine.checkpoint.resume import (
    config_changes,
    find_resumable,
    global_batch_change,
    position_mismatch,
    refuse_mismatch,
    trim_metrics_log,
    upgrade_checked,
)
from trainwell.engine.checkpoint.sharded import is_sharded_checkpoint, read_sharded
from trainwell.engine.checkpoint.weights import WeightsReport, compare_model_state, load_model_weights, model_state_of
from trainwell.engine.run import Run, metrics_writer


def resume(run: Run, source: str | Path) -> Path | None:
    """Continue from a checkpoint; returns the file used, or ``None`` when there was none.

    ``"auto"``: the newest valid checkpoint of this run directory; damaged ones are skipped and named.
    A path: that file, which must be valid.
    """
    path, payload = (
        (str(source), None) if source != "auto" else find_resumable(run.checkpoints, run.env, run.log.warning)
    )
    if path is None:
        run.log.info(f"--resume auto: no checkpoint in {run.out.run_dir}; starting afresh")
        if run.out.is_writer and run.out.run_dir is not None and not run.out.committed:  # an attempt that saved nothing
            trim_metrics_log(run.out.run_dir / "metrics.jsonl", 0)
        run.commit_outputs()
        return None
    if payload is None:  # a sharded directory: read at this run's world size (a collective), or one file
        sharded = is_sharded_checkpoint(path)
        payload = read_sharded(path, run.model, run.optimizer) if sharded else load_checkpoint(path)
    payload = upgrade_checked(path, payload)
    current_layout = dict(run.state.data_layout)
    _load_checked(run, path, payload)
    run.commit_outputs()  # the checkpoint fits: only now does this run write into the directory
    _after_resume(run, payload, current_layout)
    run.log.info(f"Resumed from '{path}' at {run.position()}, step {run.state.global_step}")
    return Path(path)


def _load_checked(run: Run, path: str, payload: dict[str, Any]) -> None:
    """Every part of the checkpoint, after checking that its model tensors fit this model.

    Raises:
        CheckpointError: listing the missing / unexpected / reshaped tensors and the changed config keys.
    """
    changes = config_changes(payload.get("config", {}), to_plain(config_to_dict(run.cfg)))
    other_batch = global_batch_change(payload.get("train_state", {}).get("data_layout", {}), run.state.data_layout)
    if other_batch:
        raise refuse_mismatch(other_batch, path, changes, run.out.run_dir)
    report = compare_model_state(run.model, model_state_of(payload, Path(path)), Path(path))
    if not report.is_exact:
        problem = f"its model does not match this run's model ({report.describe(limit=5)})"
        raise refuse_mismatch(problem, path, changes, run.out.run_dir)
    try:
        run.run_state.load_state_dict(payload)  # every part, the RNG streams last
    except (KeyError, ValueError, RuntimeError) as err:  # e.g. other optimizer parameter groups
        raise refuse_mismatch(f"its state does not fit this run ({err})", path, changes, run.out.run_dir) from None


def _after_resume(run: Run, payload: dict[str, Any], current_layout: dict[str, int]) -> None:
    """Checks after the parts loaded: the best rule, the position in the epoch, the RNG streams, the logs."""
    if run.ema is not None and "ema" not in payload:
        run.log.warning("The checkpoint holds no EMA (train.ema was off): the average starts from these weights.")
        run.ema.restart(run.state.global_step)
    changed = run.best.rule_changed()
    if changed:
        run.log.warning(changed)
    if run.out.is_writer and run.checkpoints is not None and run.checkpoints.top_k is not None:
        run.checkpoints.top_k.rebuild(up_to_step=run.state.global_step)  # from the files, by the current rule
    global_order = run.batches.plan is None  # the engine's sampler: positions are global sample counts
    saved = run.state.data_layout
    mismatch = position_mismatch(saved, current_layout, global_order=global_order) if run.state.mid_epoch else None
    if mismatch:
        run.log.warning(f"{mismatch} since the checkpoint: epoch {run.state.epoch + 1} restarts from its start.")
        run.state.batch_in_epoch = 0
        run.meter.reset()
    if not mismatch and run.state.mid_epoch and saved.get("world_size") != current_layout["world_size"]:
        samples = run.state.batch_in_epoch * current_layout["batch_size"] * current_layout["world_size"]
        run.log.info(
            f"Resharded from {saved.get('world_size')} to {current_layout['world_size']} process(es): epoch "
            f"{run.state.epoch + 1} continues after its first {samples} samples, as the same global batches."
        )
    run.state.data_layout = current_layout
    if not run.rng_part.restored:
        run.log.warning(
            f"The checkpoint holds the random streams of {len(payload['rng'])} process(es), this run has "
            f"{run.env.world_size}: each process derives its streams from all of the saved ones and its rank (random "
            "draws such as dropout masks continue, but not bit for bit as an uninterrupted run's)."
        )
    changes = config_changes(payload.get("config", {}), to_plain(config_to_dict(run.cfg)))
    if changes:
        run.log.warning("Resuming with a config that differs from the checkpoint's: " + "; ".join(changes))
    if run.out.is_writer and run.out.run_dir is not None:
        # A killed run logged steps after this checkpoint; the resumed run logs them again, once.
        run.out.metrics.close()
        dropped = trim_metrics_log(run.out.run_dir / "metrics.jsonl", run.state.global_step)
        run.out.metrics = metrics_writer(run.cfg, run.trackers, run.out.run_dir, purge_step=run.state.global_step + 1)
        run.out.metrics.write("resume", run.state.epoch + 1, run.state.global_step, {"dropped_records": dropped}, "")


def init_from(run: Run, path: str | Path, *, strict: bool = True) -> WeightsReport:
    """Load model weights only (to fine-tune), reporting missing / unexpected / shape-mismatched keys.

    Raises:
        CheckpointError: with ``strict``, on any mismatch (nothing is loaded then).
    """
    report = load_model_weights(
        run.model, path, strict=strict, map_location=run.device, foreign=run.task.foreign_weights
    )
    (run.log.info if report.is_exact else run.log.warning)(f"Initialised the model: {report.describe()}")
    if run.ema is not None:
        run.ema.restart(run.state.global_step)  # the average starts from the loaded weights, not the initial
    return report
