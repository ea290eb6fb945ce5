"""What a person reads: console + ``train.log``, ``metrics.jsonl``, TensorBoard, a progress bar.

Only rank 0 writes. Loss values arrive here already averaged over a logging interval (they were
accumulated on the device by :class:`DeviceMeter` and read once per log line).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trainwell.engine.trackers import TrackerRecorder
from trainwell.records.jsonl import open_for_append
from trainwell.records.metrics import METRICS_FILE, METRICS_VERSION, MetricsKind, metrics_line

_LOGGER_NAME = "trainwell"


class _TqdmAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes log lines through ``tqdm.write`` so they do not tear an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


class _HeldForFile(logging.handlers.BufferingHandler):
    """Log records kept until ``train.log`` may be written (a resume is checked before the run writes anything)."""

    def __init__(self) -> None:
        super().__init__(capacity=10_000)

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False  # kept until train.log exists (a few lines: only until the resume is checked)


def setup_console_logging(run_dir: Path | None, is_main: bool, *, hold_for_file: bool = False) -> logging.Logger:
    """Configure the ``trainwell`` logger: console (+ ``train.log``) on rank 0, warnings only elsewhere.

    ``hold_for_file``: without ``run_dir`` yet, keep the records; the next call with ``run_dir`` writes them to
    ``train.log`` first.
    """
    logger = logging.getLogger(_LOGGER_NAME)
    held = [record for h in logger.handlers if isinstance(h, _HeldForFile) for record in h.buffer]
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    console = _TqdmAwareHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if run_dir is not None and is_main:
        file_handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        for record in held:
            file_handler.handle(record)
        logger.addHandler(file_handler)
    elif hold_for_file and is_main:
        logger.addHandler(_HeldForFile())
    return logger


def get_logger() -> logging.Logger:
    """The `trainwell` logger (one object: `setup_console_logging` reconfigures its handlers)."""
    return logging.getLogger(_LOGGER_NAME)


def format_value(value: float) -> str:
    """Compact, aligned number formatting for log lines."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}" if magnitude < 1 else f"{value:.4f}".rstrip("0").rstrip(".")


class MetricsWriter:
    """The run's recorder: ``metrics.jsonl`` (one JSON object per line), TensorBoard scalars and the experiment
    trackers (``engine/trackers.py``), rank 0 only."""

    def __init__(
        self,
        run_dir: Path | None,
        enabled: bool,
        purge_step: int | None = None,
        *,
        tensorboard: bool = True,
        trackers: TrackerRecorder | None = None,
    ) -> None:
        """``purge_step``: hide TensorBoard events at or after this step (a resumed run writes them again);
        ``tensorboard``: write ``tb/`` (``log.trackers`` names it); ``trackers``: also send them every scalar."""
        self.enabled = enabled and run_dir is not None
        self.trackers = trackers
        self._jsonl = None
        self._tb: Any = None
        if self.enabled:
            assert run_dir is not None
            self._jsonl = open_for_append(run_dir / METRICS_FILE, METRICS_VERSION)
        if self.enabled and tensorboard:
            assert run_dir is not None
            from torch.utils.tensorboard import SummaryWriter  # slow import: only where it is used

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)

    def write(self, kind: MetricsKind, epoch: int, step: int, values: dict[str, Any], tb_prefix: str) -> None:
        """Append one record ``{"kind", "epoch", "step", **values}`` and the TensorBoard scalars."""
        if not self.enabled:
            return
        assert self._jsonl is not None
        record = metrics_line(kind, epoch, step, values)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        scalars = {
            f"{tb_prefix}/{name}": float(value)
            for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if scalars and self.trackers is not None:
            self.trackers.write(kind, step, scalars)  # the same names (the TensorBoard tags) at the same step
        if scalars and self._tb is not None:
            # One event holding every scalar of the record (not one event per scalar): the same tags and values in
            # TensorBoard, at a tenth of the cost of a log line's add_scalar calls.
            from tensorboard.compat.proto.summary_pb2 import Summary

            summary = Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()])
            self._tb._get_file_writer().add_summary(summary, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar:
    """A tqdm bar per epoch on a terminal; nothing otherwise (log lines then carry progress)."""

    def __init__(self, total: int, description: str, mode: str, enabled: bool, unit: str = "it") -> None:
        show = enabled and (mode == "on" or (mode == "auto" and sys.stdout.isatty()))
        self._bar = (
            tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, leave=False, file=sys.stdout)
            if show
            else None
        )

    def update(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def set_values(self, values: dict[str, float]) -> None:
        """Show the running loss and the task's progress items (at logging steps: values already on the host)."""
        if self._bar is not None:
            self._bar.set_postfix({k: format_value(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def train_line(
    *,
    epoch: int,
    step: int,
    batch: int,
    batches: int,
    record: dict[str, float],
    components: dict[str, float],
    logged: dict[str, float],
    lrs: dict[str, float],
    clipping: bool,
) -> str:
    """One training log line: loss and its non-zero components, logged values, LR(s), grad norm, throughput."""
    shown = " ".join(f"{n} {format_value(v)}" for n, v in components.items() if v != 0.0)
    extra = "".join(f" | {n} {format_value(v)}" for n, v in logged.items())
    if len(lrs) == 1:
        lr = f"lr {next(iter(lrs.values())):.2e}"
    else:
        lr = "lr " + " ".join(f"{name} {value:.2e}" for name, value in lrs.items())
    grad = f"grad_norm {format_value(record['grad_norm'])}"
    if clipping:
        grad += f" (clipped {record['clip_rate']:.0%})"
    return (
        f"epoch {epoch + 1} step {step} [{batch}/{batches}] loss {format_value(record['loss'])} | {shown}{extra} | "
        f"{lr} | {grad} | {record['steps_per_s']:.1f} it/s, data wait {record['data_wait_share']:.0%}"
    )


def epoch_line(
    *, epoch: int, epochs: int, train_loss: float, metrics: dict[str, float] | None, units: dict[str, str], lr: float
) -> str:
    """The epoch summary: ``Epoch 3/10 | train loss … | val mpjpe … mm | LR = 1.00e-05``."""
    parts = [f"Epoch {epoch + 1}/{epochs}", f"train loss {format_value(train_loss)}"]
    if metrics is not None:
        shown = ", ".join(
            f"{name} {format_value(value)}{' ' + units[name] if units.get(name) else ''}"
            for name, value in metrics.items()
            if "/" not in name  # grouped metrics (e.g. per joint) go to files and plots, not the line
        )
        parts.append(f"val {shown}")
    parts.append(f"LR = {lr:.2e}")
    return " | ".join(parts)
