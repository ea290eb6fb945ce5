"""Run directories (``runs/<name>/<timestamp>`` by default; a second run never overwrites the first) and the
run's ``status.json``: how it ended, machine-readable, so no tool has to guess from ``train.log``.

A run directory has one owner: a ``run.dir`` that already holds a run is refused unless the run continues it
(``--resume``) or moves it aside (``--overwrite``), and a lock (:mod:`trainwell.engine.runlock`) keeps a second
process out while the first one runs. See ``docs/run_directory.md``."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwell.engine.checkpoint.files import atomic_write_text
from trainwell.engine.runlock import RunLock, RunLockedError
from trainwell.records.status import STATUS_FILE, RunStateName, StatusRecord, status_record


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message names it and the ways on. Nothing in it changed."""


RUN_RECORDS = ("config.yaml", "metrics.jsonl", STATUS_FILE, "train.log", "findings.jsonl")
"""Files whose presence means a directory already holds a run."""
CONTINUE, REFUSE, OVERWRITE = "continue", "refuse", "overwrite"
"""What to do with a ``run.dir`` that already holds a run: continue it (``--resume``), refuse (the default), or
move it aside (``--overwrite``)."""


@dataclass
class RunDir:
    """An opened run directory: its path, the held lock, and whether it continues a run already in it."""

    path: Path
    lock: RunLock
    continuing: bool
    moved_aside: Path | None = None
    """Where ``--overwrite`` moved the run that was in ``path`` (never deleted)."""


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds a run's records or checkpoints."""
    if any((path / name).exists() for name in RUN_RECORDS):
        return True
    checkpoints = path / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.glob("*.pt"))


def open_run_dir(name: str, explicit: str | None, *, existing: str = REFUSE, root: str | Path = "runs") -> RunDir:
    """Create or open the run directory and take its lock (rank 0 only).

    ``explicit`` (``run.dir``) is used as is; otherwise ``root/name/<timestamp>`` (a new directory, never one
    that exists). ``existing`` says what to do when ``explicit`` already holds a run: ``continue``, ``refuse``
    or ``overwrite`` (move it to a sibling ``<dir>.old-<timestamp>``).

    Raises:
        RunDirError: the directory holds a run (``refuse``), another process holds its lock, or the filesystem
            refuses (a file in the way, no permission, disk full); nothing in an existing directory was changed.
    """
    path = Path(explicit) if explicit else _new_timestamped(Path(root) / name)
    try:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run.dir '{path}' is a file, not a directory: pass run.dir=DIR naming a directory.")
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(path)
    except RunLockedError as err:
        raise RunDirError(str(err)) from None
    except OSError as err:
        raise RunDirError(_os_message(path, err)) from None
    try:
        opened = _claim(path, lock, existing)
        (opened.path / "checkpoints").mkdir(exist_ok=True)
    except OSError as err:
        lock.release()
        raise RunDirError(_os_message(path, err)) from None
    except BaseException:
        lock.release()
        raise
    return opened


def _claim(path: Path, lock: RunLock, existing: str) -> RunDir:
    """Apply the ``existing`` rule to a locked directory."""
    if not holds_run(path):
        return RunDir(path, lock, continuing=False)
    if existing == CONTINUE:
        return RunDir(path, lock, continuing=True)
    if existing == REFUSE:
        raise RunDirError(
            f"run.dir '{path}' already holds a run (its config.yaml, metrics.jsonl or checkpoints). A run "
            f"directory has one owner: continue that run with --resume auto, start a new one with another "
            f"run.dir=DIR, or pass --overwrite to move the old run aside (it is kept, renamed)."
        )
    aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 1
    while aside.exists():
        aside = aside.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
        suffix += 1
    os.rename(path, aside)  # the old run, whole, under a new name; our lock file moves with it
    lock.moved_to(aside)
    try:
        path.mkdir()
        fresh = RunLock.acquire(path)
    finally:
        lock.release()
    return RunDir(path, fresh, continuing=False, moved_aside=aside)


def _new_timestamped(base_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, suffix = base_dir / stamp, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            path = base_dir / f"{stamp}-{suffix}"
            suffix += 1
        except OSError as err:
            raise RunDirError(_os_message(path, err)) from None


def _os_message(path: Path, err: OSError) -> str:
    where = f" ('{err.filename}')" if err.filename and str(err.filename) != str(path) else ""
    return (
        f"Cannot use the run directory '{path}': {err.strerror or err}{where}. Check that it is a writable "
        f"directory with free space (permissions, a read-only or full filesystem), or pass another run.dir=DIR."
    )


def resume_config_name(run_dir: Path) -> str:
    """``config.resume-<n>.yaml`` for the n-th resumption of the run in ``run_dir`` (config.yaml is never
    rewritten: each resumption records the config it ran with next to it)."""
    n = 1
    while (run_dir / f"config.resume-{n}.yaml").exists():
        n += 1
    return f"config.resume-{n}.yaml"


def write_status(run_dir: Path | None, state: RunStateName, **details: Any) -> None:
    """Record the run's state: ``running``, ``finished``, ``early_stopped`` / ``time_budget`` (``reason``),
    ``stopped_by_signal`` (``signal``; ``aborted`` after a second Ctrl-C: its last checkpoint is older than the step),
    ``nonfinite_stop``, ``crashed`` (``error``); with the step and the time.
    Durable (atomic replace), rank 0 only."""
    if run_dir is None:
        return
    record = status_record(state, **details)
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(record, default=str) + "\n")


def describe_status(status: StatusRecord) -> str:
    """One phrase for a status record (what ``trainwell doctor`` prints after the run directory)."""
    state = status.get("state")
    step = f" at step {status['step']}" if "step" in status else ""
    if state == "finished":
        return f"finished{step}"
    if state == "stopped_by_signal":
        number = status.get("signal")
        name = signal.Signals(number).name if isinstance(number, int) else "a signal"
        if status.get("aborted"):  # a second Ctrl-C: the newest checkpoint is older than the step
            return f"aborted by a second Ctrl-C{step}; resumable from its last checkpoint with --resume auto"
        return f"stopped by {name}{step}; resumable with --resume auto"
    if state in ("early_stopped", "time_budget"):
        return f"{state.replace('_', ' ')}{step}: {status.get('reason', '')}; last.pt holds that step"
    if state == "nonfinite_stop":
        return f"stopped by the non-finite policy{step}"
    if state == "crashed":
        return f"crashed{step}"  # why: the doctor's run.crashed finding
    if state == "running":
        return f"running, or killed without a chance to record it (last update {status.get('updated', '?')}{step})"
    return "unfinished: no status.json (still running under an older trainwell, or not a trainwell run)"
