"""What a resumed run needs besides the state dicts: run-directory rules, logs, meters, compatibility checks.

A resumed run continues with exactly the batch that would have come next: the sampler skips the
micro-batches of the epoch already consumed (``TrainState.batch_in_epoch``), the optimizer, schedule,
grad scaler and RNG states are restored, and the loss meters hold what they held at the save, so even
the log lines match an uninterrupted run. ``metrics.jsonl`` keeps the records up to the checkpoint's
step and drops the ones a killed run wrote after it (the resumed run writes them again), so every step
appears once; TensorBoard hides those steps the same way (``purge_step``).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.engine import distributed as D
from trainwell.engine.checkpoint.files import CheckpointError, atomic_write_text
from trainwell.engine.checkpoint.manager import CheckpointManager
from trainwell.engine.checkpoint.state import upgrade_payload

#: Config sections whose changes do not matter for continuing a run.
_IGNORED_CONFIG_KEYS = ("run.", "train.progress_bar", "train.device", "data.num_workers", "data.pin_memory")


def library_versions() -> dict[str, str]:
    """Versions stored in each checkpoint, for the person who reads it a year later."""
    try:
        trainwell_version = metadata.version("trainwell")
    except metadata.PackageNotFoundError:
        trainwell_version = "unknown"
    return {
        "trainwell": trainwell_version,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }


def run_dir_of_checkpoint(path: str | Path) -> Path | None:
    """``<run>`` for ``<run>/checkpoints/<file>``, else ``None``."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def directory_instead_of_checkpoint(path: str | Path) -> str | None:
    """Why ``--resume DIR`` is not a checkpoint when ``DIR`` is a run directory or any other directory that is not a
    sharded checkpoint (``None`` for a file or a ``*.dcp`` / shard directory, which the loader judges itself)."""
    path = Path(path)
    if not path.is_dir() or path.suffix == ".dcp" or any(path.glob("*.distcp")):
        return None
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        return (
            f"--resume '{path}' is a run directory, not a checkpoint: continue it with run.dir={path} --resume auto "
            f"(its newest valid checkpoint), or pass one of its checkpoints, e.g. {path / 'checkpoints' / 'last.pt'}."
        )
    return (
        f"--resume '{path}' is a directory but not a checkpoint: pass a checkpoint file (…/checkpoints/last.pt), a "
        "sharded checkpoint directory (…/checkpoints/last.dcp), or run.dir=DIR --resume auto."
    )


# -- compatibility --------------------------------------------------------------------------------


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every config value that differs from the checkpoint's (run.* etc. ignored)."""
    old, new = _flatten(saved), _flatten(current)
    # The same train.global_batch_size derives another per-process batch on another number of processes: no change.
    derived = old.get("train.global_batch_size") is not None and old.get("train.global_batch_size") == new.get(
        "train.global_batch_size"
    )
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if key.startswith(_IGNORED_CONFIG_KEYS) or (derived and key == "train.batch_size"):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            changes.append(f"{key}: {old.get(key, '<absent>')!r} → {new.get(key, '<absent>')!r}")
    return changes


def global_batch_change(saved_data: dict[str, Any], current: dict[str, int]) -> str | None:
    """Why a checkpoint written by another number of processes cannot continue here (``None`` if it can).

    ``train.batch_size`` is per process: on another number of processes the global batch (batch size × processes)
    must stay what it was, or the optimizer steps and the schedule would not be those of the run.
    """
    if not saved_data or saved_data.get("world_size") == current["world_size"]:
        return None
    size, world = int(saved_data.get("batch_size", 0)), int(saved_data.get("world_size", 0))
    before, after = size * world, current["batch_size"] * current["world_size"]
    if before == after:
        return None
    per_step = before * int(saved_data.get("grad_accum_steps", 1))
    fix = (
        f"set train.batch_size={before // current['world_size']} to keep it"
        if before % current["world_size"] == 0
        else f"run it on a number of processes that divides {before}"
    ) + f" (train.global_batch_size={per_step} keeps it on any number of processes that divides it)"
    return (
        f"it was written with a global batch of {before} (train.batch_size {size} × {world} process(es)) and this "
        f"run's is {after} (train.batch_size {current['batch_size']} × {current['world_size']} process(es)): {fix}"
    )


def position_mismatch(saved_data: dict[str, Any], current: dict[str, int], *, global_order: bool) -> str | None:
    """Why the saved position inside an epoch cannot be continued exactly (``None`` if it can).

    The micro-batches already consumed are counted per process. With the engine's sampler (``global_order``: one
    permutation of ``(seed, epoch)``, dealt over the processes) ``k`` micro-batches of ``batch_size`` on each of
    ``world_size`` processes are the first ``k × batch_size × world_size`` samples of the permutation, so another
    number of processes with the same global batch continues at the same sample. Anything else that changed (or
    another world size under a task's batch sampler) makes the count meaningless.
    """
    keys = dict(current)
    if global_order and saved_data.get("batch_size", 0) * saved_data.get("world_size", 0) == (
        current["batch_size"] * current["world_size"]
    ):
        keys.pop("batch_size"), keys.pop("world_size")  # the same global position: resharded, not restarted
    changed = [f"{key} {saved_data.get(key)} → {value}" for key, value in keys.items() if saved_data.get(key) != value]
    return ", ".join(changed) or None


def refuse_mismatch(problem: str, path: str | Path, changes: list[str], run_dir: Path | None) -> CheckpointError:
    """The error of a resume whose checkpoint does not fit this run: what differs, and the config keys that
    changed since the checkpoint (the usual cause). Raised before anything is written."""
    shown = "; ".join(changes[:10]) + (f" … and {len(changes) - 10} more" if len(changes) > 10 else "")
    config = (
        f" Config keys that differ from the checkpoint's ({len(changes)}): {shown}."
        if changes
        else " No config key differs from the checkpoint's (the task's code changed?)."
    )
    untouched = f" Nothing in '{run_dir}' was changed." if run_dir is not None else ""
    return CheckpointError(
        f"Cannot resume from '{path}': {problem}.{config}{untouched} Resume with the config the run was trained "
        f"with (its config.yaml), or start a new run (another run.dir=DIR; --init-from PATH "
        f"--init-from-non-strict reuses the matching weights)."
    )


# -- metrics.jsonl --------------------------------------------------------------------------------


def trim_metrics_log(path: Path, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` written after optimizer step ``step``; returns how many.

    A run killed after its last checkpoint logged steps that the resumed run will log again. A torn
    last line (the process died mid-write) is dropped too. The file is replaced atomically.
    """
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


def find_resumable(
    manager: CheckpointManager | None, env: D.DistEnv, warn: Callable[[str], None]
) -> tuple[str | None, dict[str, Any] | None]:
    """``--resume auto``: rank 0 scans the checkpoint directory; every process learns the chosen path (rank 0
    also gets its verified payload; the others load the file themselves).

    Raises:
        CheckpointError: no run directory, or checkpoints exist but none is valid (on every process).
    """
    if manager is None:
        raise CheckpointError("--resume auto needs a run directory to look in (run.dir=DIR).")
    found, payload, error = None, None, None
    if env.is_main:
        for stale in manager.remove_stale_temp_files():
            warn(f"Removed '{stale}', left by a process killed while saving.")
        try:
            hit = manager.find_resumable()
        except CheckpointError as err:
            error = str(err)
        else:
            if hit is not None:  # a sharded checkpoint: every process reads its shards (resuming.resume)
                found, payload = str(hit[0]), (hit[1] if hit[0].is_file() else None)
    found, error = D.broadcast_object((found, error), env)
    if error is not None:
        raise CheckpointError(error)
    return found, payload


def upgrade_checked(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload in the current format, or a :class:`CheckpointError` saying which version wrote it."""
    try:
        return upgrade_payload(payload)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"Cannot resume from '{path}': {err}.") from None
