"""What a person reads: console + ``train.log``, ``metrics.jsonl``, TensorBoard, a progress bar.

Only rank 0 writes. Loss values arrive here already averaged over a logging interval (they were
accumulated on the device by :class:`DeviceMeter` and read once per log line).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

_LOGGER_NAME = "trainwell"


class DeviceMeter:
    """Running sums of named scalars, kept on the device; read (one host sync) only when logging.

    One ``add_`` per step. ``read_interval`` returns the sums since its previous call (a log line),
    ``read_total`` the sums since ``reset`` (an epoch), both from the same cumulative tensor.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.names: tuple[str, ...] = ()
        self.total: torch.Tensor | None = None
        self.count = 0
        self._flushed: dict[str, float] = {}  # sums of component sets that were replaced
        self._snapshot: dict[str, float] = {}
        self._snapshot_count = 0

    def add(self, names: tuple[str, ...], values: torch.Tensor) -> None:
        """Add one step's values ``(K,)`` named by ``names`` (no host sync)."""
        if names != self.names and self.total is not None:
            # The set of components changed (an optional term switched on): keep what we had.
            for name, value in zip(self.names, self.total.tolist(), strict=True):
                self._flushed[name] = self._flushed.get(name, 0.0) + value
            self.total = None
        if self.total is None:
            self.names = names
            self.total = values.detach().clone()
        else:
            self.total.add_(values.detach())
        self.count += 1

    def read_total(self) -> tuple[dict[str, float], int]:
        """``(sums, count)`` since ``reset`` (one host sync)."""
        sums = dict(self._flushed)
        if self.total is not None:
            for name, value in zip(self.names, self.total.tolist(), strict=True):
                sums[name] = sums.get(name, 0.0) + value
        return sums, self.count

    def read_interval(self) -> tuple[dict[str, float], int]:
        """``(sums, count)`` since the previous ``read_interval`` (one host sync)."""
        sums, count = self.read_total()
        interval = {name: value - self._snapshot.get(name, 0.0) for name, value in sums.items()}
        interval_count = count - self._snapshot_count
        self._snapshot, self._snapshot_count = sums, count
        # A component absent from the whole interval stays out of the log line.
        return {k: v for k, v in interval.items() if k in self.names or v != 0.0}, interval_count

    def state_dict(self) -> dict[str, Any]:
        """Everything the meter holds (one host sync), so a resumed run logs what an uninterrupted one would."""
        return {
            "names": list(self.names),
            "total": None if self.total is None else self.total.detach().cpu(),
            "count": self.count,
            "flushed": dict(self._flushed),
            "snapshot": dict(self._snapshot),
            "snapshot_count": self._snapshot_count,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.names = tuple(state["names"])
        self.total = None if state["total"] is None else state["total"].to(device)
        self.count = int(state["count"])
        self._flushed = dict(state["flushed"])
        self._snapshot = dict(state["snapshot"])
        self._snapshot_count = int(state["snapshot_count"])


class _TqdmAwareHandler(logging.StreamHandler):
    """Writes log lines through ``tqdm.write`` so they do not tear an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


def setup_console_logging(run_dir: Path | None, is_main: bool) -> logging.Logger:
    """Configure the ``trainwell`` logger: console (+ ``train.log``) on rank 0, warnings only elsewhere."""
    logger = logging.getLogger(_LOGGER_NAME)
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
        logger.addHandler(file_handler)
    return logger


def get_logger() -> logging.Logger:
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
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars, rank 0 only."""

    def __init__(self, run_dir: Path | None, enabled: bool, purge_step: int | None = None) -> None:
        """``purge_step``: hide TensorBoard events at or after this step (a resumed run writes them again)."""
        self.enabled = enabled and run_dir is not None
        self._jsonl = None
        self._tb: Any = None
        if self.enabled:
            assert run_dir is not None
            self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            from torch.utils.tensorboard import SummaryWriter  # slow import: only where it is used

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)

    def write(self, kind: str, epoch: int, step: int, values: dict[str, float], tb_prefix: str) -> None:
        """Append one record ``{"kind", "epoch", "step", **values}`` and the TensorBoard scalars."""
        if not self.enabled:
            return
        assert self._jsonl is not None
        record = {"kind": kind, "epoch": epoch, "step": step, **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._tb.add_scalar(f"{tb_prefix}/{name}", value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar:
    """A tqdm bar per epoch on a terminal; nothing otherwise (log lines then carry progress)."""

    def __init__(self, total: int, description: str, mode: str, enabled: bool) -> None:
        show = enabled and (mode == "on" or (mode == "auto" and sys.stdout.isatty()))
        self._bar = (
            tqdm(total=total, desc=description, unit="it", dynamic_ncols=True, leave=False, file=sys.stdout)
            if show
            else None
        )

    def update(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def set_loss(self, loss: float) -> None:
        """Show the running loss (called at logging steps, when the value is already on the host)."""
        if self._bar is not None:
            self._bar.set_postfix(loss=format_value(loss), refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
