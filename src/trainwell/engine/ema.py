"""An exponential moving average of the model's weights (``train.ema``), kept on the model's device.

``ema = decay·ema + (1 − decay)·w`` for every floating parameter, after every ``every`` optimizer steps, starting
from a copy of the weights after ``start_step`` steps. Buffers (BatchNorm running statistics, counters) are copied
from the model at each update, not averaged: they are statistics of the data, not weights to smooth.

The update is two ``torch._foreach_*`` kernels per update and reads nothing back to the host (the decay is a
Python float computed from a Python counter). Each process keeps its own average: under DDP the weights are the
same on every process, so the averages are too, without communication.

The average is the checkpoint part ``ema``: ``{"model": <a state dict like the model's>, "num_updates",
"started_at"}``, restored exactly on resume; ``trainwell export --ema`` writes its ``model``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainwell.config.training import EmaConfig


def ema_decay(cfg: EmaConfig, update: int) -> float:
    """The decay of update number ``update`` (1, 2, …): ``cfg.decay``, or with warm-up ``min(decay, (1+n)/(10+n))``."""
    if not cfg.warmup:
        return cfg.decay
    return min(cfg.decay, (1.0 + update) / (10.0 + update))


class ModelEma:
    """The average of one model's weights: a frozen copy of the model, updated in place.

    ``module`` is a full ``nn.Module`` (same class as the model), so it evaluates and exports like the model.
    """

    def __init__(self, model: nn.Module, cfg: EmaConfig) -> None:
        self.cfg = cfg
        self.model = model
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        pairs = [(p, e) for p, e in zip(model.parameters(), self.module.parameters(), strict=True)]
        # Integer parameters cannot be averaged; they are copied like buffers.
        self._live = [p.detach() for p, _ in pairs if p.is_floating_point()]
        self._avg = [e.detach() for p, e in pairs if p.is_floating_point()]
        copied = [(p.detach(), e.detach()) for p, e in pairs if not p.is_floating_point()]
        copied += list(zip(model.buffers(), self.module.buffers(), strict=True))
        self._copy_src = [src for src, _ in copied]
        self._copy_dst = [dst for _, dst in copied]
        self.num_updates = 0
        self.started_at: int | None = None
        """The optimizer step whose weights started the average (``None``: not started yet)."""

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def maybe_start(self, step: int) -> bool:
        """Start the average from the current weights if ``step`` reached ``start_step`` and it has not started."""
        if self.started or step < self.cfg.start_step:
            return False
        self._copy_all()
        self.started_at = step
        return True

    def restart(self, step: int) -> None:
        """Forget the average (new weights were loaded at ``step``): it starts again when ``start_step`` is reached."""
        self.started_at, self.num_updates = None, 0
        self.maybe_start(step)

    def maybe_update(self, step: int) -> bool:
        """Call after optimizer step ``step``: start the average, or update it every ``every`` steps."""
        if self.maybe_start(step):
            return True
        if not self.started or (step - self.started_at) % self.cfg.every != 0:  # type: ignore[operator]
            return False
        self.num_updates += 1
        decay = ema_decay(self.cfg, self.num_updates)
        with torch.no_grad():
            torch._foreach_mul_(self._avg, decay)
            torch._foreach_add_(self._avg, self._live, alpha=1.0 - decay)
            if self._copy_dst:
                torch._foreach_copy_(self._copy_dst, self._copy_src)
        return True

    def _copy_all(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._avg, self._live)
            if self._copy_dst:
                torch._foreach_copy_(self._copy_dst, self._copy_src)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "num_updates": self.num_updates, "started_at": self.started_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        started = state["started_at"]
        self.started_at = None if started is None else int(started)


def build_ema(model: nn.Module, cfg: EmaConfig | None) -> ModelEma | None:
    """The EMA of ``model`` when ``train.ema`` is set, else ``None``."""
    return ModelEma(model, cfg) if cfg is not None else None
