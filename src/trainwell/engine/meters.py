"""Meters: values accumulated on the device between log lines, read (one host sync) only when a line is written.

* :class:`DeviceMeter` — running sums of the named loss components and logged values of each micro-batch;
* :class:`StepStats` — gradient-norm, clipping and timing statistics of the optimizer steps.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class DeviceMeter:
    """Running sums of named scalars, kept on the device; read (one host sync) only when logging.

    ``add`` only keeps a reference to the step's values (no kernel per step); the references are summed into the
    cumulative tensor in one ``stack().sum()`` when the meter is read or saved (logging steps, checkpoints, epoch
    ends — the same points in an uninterrupted and a resumed run, so their sums are bitwise equal).
    ``read_interval`` returns the sums since its previous call (a log line), ``read_total`` the sums since
    ``reset`` (an epoch), both from the same cumulative tensor.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.names: tuple[str, ...] = ()
        self.total: torch.Tensor | None = None
        self.count = 0
        self._flushed: dict[str, float] = {}  # sums of component sets that were replaced
        self._snapshot: dict[str, float] = {}
        self._snapshot_count = 0
        self._pending: list[torch.Tensor] = []

    def add(self, names: tuple[str, ...], values: torch.Tensor) -> None:
        """Add one step's values ``(K,)`` named by ``names`` (no kernel, no host sync; never modified later)."""
        if names != self.names:
            self._fold()
            if self.total is not None:
                # The set of components changed (an optional term switched on): keep what we had.
                for name, value in zip(self.names, self.total.tolist(), strict=True):
                    self._flushed[name] = self._flushed.get(name, 0.0) + value
                self.total = None
            self.names = names
        self._pending.append(values)
        self.count += 1

    def _fold(self) -> None:
        """Sum the pending steps into the cumulative tensor (one kernel or two, on read / save only)."""
        if not self._pending:
            return
        step_sum = torch.stack(self._pending).sum(dim=0) if len(self._pending) > 1 else self._pending[0].clone()
        self.total = step_sum if self.total is None else self.total + step_sum
        self._pending = []

    def read_total(self) -> tuple[dict[str, float], int]:
        """``(sums, count)`` since ``reset`` (one host sync)."""
        self._fold()
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

    def tensors(self) -> list[torch.Tensor]:
        """The device tensors holding sums and not yet summed steps (for the finite-state check before a save)."""
        return [*([self.total] if self.total is not None else []), *self._pending]

    def state_dict(self) -> dict[str, Any]:
        """Everything the meter holds (one host sync), so a resumed run logs what an uninterrupted one would."""
        self._fold()
        return {
            "names": list(self.names),
            "total": None if self.total is None else self.total.detach().cpu(),
            "count": self.count,
            "flushed": dict(self._flushed),
            "snapshot": dict(self._snapshot),
            "snapshot_count": self._snapshot_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.names = tuple(state["names"])
        self.total = None if state["total"] is None else state["total"].to(self.device or "cpu")
        self.count = int(state["count"])
        self._flushed = dict(state["flushed"])
        self._snapshot = dict(state["snapshot"])
        self._snapshot_count = int(state["snapshot_count"])
        self._pending = []


class StepStats:
    """Per-interval gradient and timing statistics, kept on the device until a log line reads them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.data_wait_s = 0.0
        self.scale: float | None = None
        """The fp16 GradScaler's scale after the last step (read once per step; see ``optimizer_step``)."""
        self.reset()

    def reset(self) -> None:
        self.norm_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        self.norm_max = torch.zeros((), device=self.device, dtype=torch.float32)
        self.num_clipped = torch.zeros((), device=self.device, dtype=torch.float32)
        self.num_measured = 0
        self.num_steps = 0
        self.num_skipped = 0
        self.num_nonfinite = 0  # updates skipped under diagnostics.nonfinite=skip
        self.data_wait_s = 0.0
        self.started = time.perf_counter()

    def add_norm(self, norm: torch.Tensor, clip: float | None) -> None:
        norm = norm.detach().float()
        self.norm_sum += norm
        torch.maximum(self.norm_max, norm, out=self.norm_max)
        if clip is not None:
            self.num_clipped += (norm > clip).float()
        self.num_measured += 1

    def read_and_reset(self, clip: float | None) -> dict[str, float]:
        """Interval summary (one host sync) and a fresh interval."""
        elapsed = max(1e-9, time.perf_counter() - self.started)
        values = torch.stack([self.norm_sum, self.norm_max, self.num_clipped]).tolist()
        measured = max(1, self.num_measured)
        out = {
            "grad_norm": values[0] / measured,
            "grad_norm_max": values[1],
            "steps_per_s": self.num_steps / elapsed,
            "data_wait_share": min(1.0, self.data_wait_s / elapsed),
            "skipped_steps": float(self.num_skipped),
        }
        if clip is not None:
            out["clip_rate"] = values[2] / measured
        if self.num_nonfinite:
            out["nonfinite_skipped"] = float(self.num_nonfinite)
        self.reset()
        return out
