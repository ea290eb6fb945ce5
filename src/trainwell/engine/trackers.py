"""The interface between the run's recorder and experiment trackers (MLflow, W&B, trackio; ``log.trackers``).

The engine defines :class:`Tracker` and forwards to it; it never imports a tracker package — the CLI builds the
adapters (``trainwell.trackers``) and hands them to the Trainer. :class:`TrackerRecorder` is what the recorder
(``MetricsWriter``) calls: every record's scalars go to every tracker under the TensorBoard tags, at the same step.

Lifecycle (rank 0 only): the trackers' runs start when the run's status becomes ``running`` (after a resume, so a
resumed run continues the same tracker run: the ids are kept in ``<run>/trackers.json``) and end with the final
status, carrying the final and best metrics. ``trackers.json`` also keeps the last step of each kind of record each
tracker got: a resumed run re-does the steps after its checkpoint, and the records the trackers already have (those
of the interrupted run, bitwise the same when the resume is exact) are not sent twice. A tracker that buffers its
writes (trackio) says what its store really holds (``stored_points``): what a killed process lost is sent again, from
``metrics.jsonl`` up to the checkpoint's step and by the resumed run after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from trainwell.engine.checkpoint.state import TrainState
from trainwell.records.metrics import METRICS_FILE, line_values, read_metrics
from trainwell.records.status import FINISHED_STATES

TRACKERS_FILE = "trackers.json"

_PREFIXES = {"train": "Train", "val": "Val"}
"""``metrics.jsonl`` kinds → TensorBoard tag prefixes (as the loop writes them)."""


class Tracker(Protocol):
    """One experiment tracker, as the engine sees it."""

    name: str
    """``mlflow``, ``wandb`` or ``trackio`` (the key in ``trackers.json``)."""

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        """Open a new tracker run (``run_id`` None) or continue ``run_id``; record ``params`` (the resolved config,
        nested); return the run's id."""
        ...

    def stored_points(self) -> set[tuple[str, int]] | None:
        """After ``start`` of a continued run: the ``(tag, step)`` pairs the tracker's own store holds, where it can
        tell (a tracker that buffers writes loses its buffer when its process is killed); ``None``: all it got."""
        ...

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Record scalars (TensorBoard tags → values) at optimizer step ``step``."""
        ...

    def finish(self, summary: Mapping[str, float], *, step: int, succeeded: bool) -> None:
        """Record the final and best metrics and close the run (failed when ``succeeded`` is false)."""
        ...


class TrackerRecorder:
    """Forwards the recorder's scalars to the trackers and keeps their ids and last steps in ``<run>/trackers.json``."""

    def __init__(self, trackers: Sequence[Tracker], run_dir: Path | None) -> None:
        self.trackers = list(trackers) if run_dir is not None else []
        self.run_dir = run_dir
        self.started = False
        self.ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        """Per record kind (``train``, ``val``): the last step the trackers got."""
        self._skip_through: dict[str, dict[str, int]] = {}
        """Per tracker, per kind: steps up to this one it already holds (from the run before a resume)."""
        self._held: dict[str, set[tuple[str, int]]] = {}
        """Per tracker that can tell: the ``(tag, step)`` pairs its store holds (instead of ``_skip_through``)."""

    def start(self, params: Mapping[str, Any], *, resumed: bool) -> None:
        """Open (or, ``resumed``, continue) every tracker's run."""
        if not self.trackers or self.started:
            return
        saved = self._read() if resumed else {}
        self.ids = dict(saved.get("ids", {}))
        self.last_step = {k: int(v) for k, v in saved.get("last_step", {}).items()}
        assert self.run_dir is not None
        for tracker in self.trackers:
            self.ids[tracker.name] = tracker.start(self.run_dir, self.ids.get(tracker.name), params)
            self._skip_through[tracker.name] = dict(self.last_step)
            held = tracker.stored_points() if resumed else None
            if held is not None:
                self._held[tracker.name] = held
                self._replay(tracker)
        self.started = True
        self._save()

    def follow(self, state: str, train_state: TrainState, params: Callable[[], Mapping[str, Any]]) -> None:
        """Follow the run's status: start at ``running`` (continued when ``train_state`` is past the start), finish
        with the final and best metrics at any other state."""
        if state == "running":
            self.start(params(), resumed=train_state.global_step > 0 or train_state.mid_epoch)
            return
        summary = {f"final/{name}": value for name, value in train_state.last_metrics.items()}
        if train_state.best_value is not None and train_state.best_step is not None:
            summary.update({"best/value": train_state.best_value, "best/step": float(train_state.best_step)})
        self.finish(state, summary, step=train_state.global_step)

    def write(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        """Send one record's scalars, unless the trackers already have this kind of record at this step."""
        if not self.started or not scalars:
            return
        for tracker in self.trackers:
            if self._should_send(tracker.name, kind, step, scalars):
                tracker.log_scalars(scalars, step)
        self.last_step[kind] = step
        self._save()

    def _should_send(self, name: str, kind: str, step: int, scalars: Mapping[str, float]) -> bool:
        held = self._held.get(name)
        if held is None:
            return step > self._skip_through[name].get(kind, -1)
        point = (next(iter(scalars)), step)
        if point in held:
            return False
        held.add(point)
        return True

    def _replay(self, tracker: Tracker) -> None:
        """Send ``tracker`` the records of ``metrics.jsonl`` (trimmed to the resumed checkpoint's step) its store does
        not hold: what its process lost when it was killed and the resumed run will not log again."""
        assert self.run_dir is not None
        for record in read_metrics(self.run_dir / METRICS_FILE):
            prefix = _PREFIXES[record["kind"]]
            scalars = {f"{prefix}/{k}": v for k, v in line_values(record).items()}
            if scalars and self._should_send(tracker.name, record["kind"], record["step"], scalars):
                tracker.log_scalars(scalars, record["step"])

    def finish(self, state: str, summary: Mapping[str, float], step: int) -> None:
        """Close every tracker's run with the run's final ``state`` and the final and best metrics."""
        if not self.started:
            return
        for tracker in self.trackers:
            tracker.finish(summary, step=step, succeeded=state in FINISHED_STATES)
        self.started = False

    def _read(self) -> dict[str, Any]:
        assert self.run_dir is not None
        try:
            data = json.loads((self.run_dir / TRACKERS_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        # Replaced whole (never torn), without fsync: at most the last record of a crash is sent twice.
        assert self.run_dir is not None
        path = self.run_dir / TRACKERS_FILE
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"ids": self.ids, "last_step": self.last_step}) + "\n", encoding="utf-8")
        os.replace(tmp, path)
