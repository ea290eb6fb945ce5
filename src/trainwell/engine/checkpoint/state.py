"""What a checkpoint holds: named stateful parts, each saving and restoring itself.

A checkpoint (format 2) is ``{"format": 2, <part name>: <part.state_dict()>, ..., "config", "versions"}``, with
the parts ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``train_state`` (:class:`TrainState`: epoch, step,
position in the epoch, best so far, data layout), ``meters`` (the loss sums, so a resumed run logs what an
uninterrupted one would), ``rng`` (every process's python / NumPy / torch / CUDA generators) and, when the task
has ``state_dict``, ``task``; ``ema`` (``engine/ema.py``) when ``train.ema`` is set. Adding a part (a custom sampler)
is one ``parts[...] = obj`` line.
Parts load in insertion order; ``rng`` is added last, because nothing may draw random numbers after it loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import torch

from trainwell.engine.checkpoint.rng import gather_rng_states, restore_own_rng_state
from trainwell.engine.distributed import DistEnv
from trainwell.records.checkpoint import CHECKPOINT_FORMAT

FORMAT_VERSION = CHECKPOINT_FORMAT
"""Written into every checkpoint (its keys: :class:`trainwell.records.CheckpointMeta`); format 1 is converted on load by
:func:`upgrade_payload`."""


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclass
class TrainState:
    """Where training is; its dict form is its fields, so a new field is one edit here."""

    epoch: int = 0
    """Epochs completed."""
    global_step: int = 0
    """Optimizer steps taken (including fp16 steps the GradScaler skipped)."""
    batch_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed (non-zero only mid-epoch)."""
    best_value: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    best_rule: str | None = None
    """``"<best_metric> (<best_mode>)"`` the best value was chosen by."""
    last_metrics: dict[str, float] = field(default_factory=dict)
    data_layout: dict[str, int] = field(default_factory=dict)
    """What ``batch_in_epoch`` counts in (batch size, accumulation, world size, dataset size, seed)."""
    elapsed_s: float = 0.0
    """Wall-clock seconds of training so far, summed over resumes (``train.max_time``; as of the last step)."""
    early_stop_best: float | None = None
    """``eval.early_stop``: the best value by at least ``min_delta`` steps (it may lag ``best_value``)."""
    evals_without_improvement: int = 0
    """``eval.early_stop``: evaluations in a row without such an improvement."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])

    @property
    def mid_epoch(self) -> bool:
        return self.batch_in_epoch > 0


class RunState:
    """The named parts of a run; ``state_dict()`` is the checkpoint, ``load_state_dict()`` restores every part."""

    def __init__(self) -> None:
        self.parts: dict[str, Stateful] = {}
        self.optional: set[str] = set()
        """Parts a checkpoint may lack (one written before they were configured, e.g. ``ema``): left as built."""

    def state_dict(self) -> dict[str, Any]:
        """Every part's state (collective for ``rng``: every process calls it together)."""
        return {"format": FORMAT_VERSION, **{name: part.state_dict() for name, part in self.parts.items()}}

    def load_state_dict(self, payload: Mapping[str, Any]) -> None:
        missing = [name for name in self.parts if name not in payload and name not in self.optional]
        if missing:
            raise KeyError(f"the checkpoint has no {', '.join(missing)}")
        for name, part in self.parts.items():
            if name in payload:
                part.load_state_dict(payload[name])


def upgrade_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint as format 2 (same tensors; train state, data layout and metrics moved into
    ``train_state``). Raises ``ValueError`` for a format newer than this trainwell knows."""
    version = payload.get("format", 1)
    if version == FORMAT_VERSION:
        return payload
    if version != 1:
        raise ValueError(
            f"checkpoint format {version} is newer than this trainwell reads ({FORMAT_VERSION}); it was written by "
            f"trainwell {payload.get('versions', {}).get('trainwell', '?')}: upgrade trainwell to resume it"
        )
    saved = dict(payload["train_state"])
    rule = saved.pop("best_metric", None)
    mode = saved.pop("best_mode", "min")
    saved["best_rule"] = f"{rule} ({mode})" if rule else None
    saved["last_metrics"] = dict(payload.get("metrics", {}))
    saved["data_layout"] = dict(payload.get("data", {}))
    return {**payload, "format": FORMAT_VERSION, "train_state": saved, "meters": payload["meters"]["loss"]}


class ScalerPart:
    """The GradScaler as a part; a checkpoint saved without fp16 holds an empty scaler state."""

    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.scaler = scaler

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state or not self.scaler.is_enabled():
            self.scaler.load_state_dict(dict(state))


class RngPart:
    """Every process's random streams (saving is a collective); loading restores this rank's own.

    ``restored`` tells whether it could (``False`` when the world size changed: the caller reseeds and warns).
    """

    def __init__(self, env: DistEnv, device: torch.device) -> None:
        self.env = env
        self.device = device
        self.restored = True

    def state_dict(self) -> list[dict[str, Any]]:
        return gather_rng_states(self.env, self.device)

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        self.restored = restore_own_rng_state(states, self.env, self.device)
