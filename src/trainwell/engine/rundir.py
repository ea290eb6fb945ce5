"""Run directories (``runs/<name>/<timestamp>`` by default; a second run never overwrites the first) and the
run's ``status.json``: how it ended, machine-readable, so no tool has to guess from ``train.log``."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from trainwell.engine.checkpoint.files import atomic_write_text

STATUS_FILE = "status.json"


def make_run_dir(name: str, explicit: str | None, root: str | Path = "runs") -> Path:
    """Create and return the run directory (``explicit`` is used as is, e.g. to resume into it)."""
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / name / stamp
        path, suffix = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                path = base.with_name(f"{stamp}-{suffix}")
                suffix += 1
    (path / "checkpoints").mkdir(exist_ok=True)
    return path


def write_status(run_dir: Path | None, state: str, **details: Any) -> None:
    """Record the run's state: ``running``, ``finished``, ``early_stopped`` / ``time_budget`` (``reason``),
    ``stopped_by_signal`` (``signal``), ``nonfinite_stop``, ``crashed`` (``error``); with the step and the time.
    Durable (atomic replace), rank 0 only."""
    if run_dir is None:
        return
    record = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(record, default=str) + "\n")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The recorded status, or ``{}`` when the run wrote none (an older trainwell, or not started)."""
    path = run_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_status(status: dict[str, Any]) -> str:
    """One phrase for a status record (what ``trainwell doctor`` prints after the run directory)."""
    state = status.get("state")
    step = f" at step {status['step']}" if "step" in status else ""
    if state == "finished":
        return f"finished{step}"
    if state == "stopped_by_signal":
        number = status.get("signal")
        name = signal.Signals(number).name if isinstance(number, int) else "a signal"
        return f"stopped by {name}{step}; resumable with --resume auto"
    if state in ("early_stopped", "time_budget"):
        return f"{state.replace('_', ' ')}{step}: {status.get('reason', '')}; last.pt holds that step"
    if state == "nonfinite_stop":
        return f"stopped by the non-finite policy{step}"
    if state == "crashed":
        return f"crashed{step}: {status.get('error', 'unknown error')}"
    if state == "running":
        return f"running, or killed without a chance to record it (last update {status.get('updated', '?')}{step})"
    return "unfinished: no status.json (still running under an older trainwell, or not a trainwell run)"
