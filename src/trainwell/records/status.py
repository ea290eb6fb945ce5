"""``status.json``: how a run ended (or that it is running), machine-readable, replaced atomically on each change."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

from trainwell.records.jsonl import check_version

STATUS_FILE = "status.json"
STATUS_VERSION = 1
"""1: the ``version`` field (0: the same record without it)."""

RunStateName = Literal[
    "running", "finished", "early_stopped", "time_budget", "stopped_by_signal", "nonfinite_stop", "crashed"
]
RUN_STATES: tuple[str, ...] = get_args(RunStateName)
FINISHED_STATES = ("finished", "early_stopped", "time_budget")
"""States of a run that ended as planned (the others: stopped by a signal, non-finite, crashed, still running)."""


class StatusRecord(TypedDict, total=False):
    version: int
    state: RunStateName
    updated: str
    """Local time of the change, ``%Y-%m-%dT%H:%M:%S%z``."""
    step: int
    """Optimizer steps taken."""
    error: str
    """``crashed``: ``<exception type>: <message>``."""
    signal: int
    """``stopped_by_signal``: the signal's number."""
    aborted: bool
    """``stopped_by_signal``: a second Ctrl-C aborted the run (nothing was saved at the stop)."""
    reason: str
    """``early_stopped`` / ``time_budget``: why, in words."""


def status_record(state: RunStateName, **details: Any) -> StatusRecord:
    """The record for ``state`` now, with ``details`` (``step``, ``error``, ``signal``, ``reason``)."""
    if state not in RUN_STATES:
        raise ValueError(f"unknown run state '{state}' (one of {', '.join(RUN_STATES)})")
    record: dict[str, Any] = {
        "version": STATUS_VERSION,
        "state": state,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **details,
    }
    return record  # type: ignore[return-value]


def read_status(run_dir: Path) -> StatusRecord:
    """The run's recorded status, or ``{}`` when it wrote none (not started, or a file torn by a crash of the OS).

    Raises:
        RecordVersionError: written by a newer trainwell.
    """
    path = run_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    check_version(data.get("version"), STATUS_VERSION, path)
    return data  # type: ignore[return-value]
