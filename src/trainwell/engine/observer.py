"""What the loop tells an observer of the run (the doctor), and the observer that does nothing.

The engine calls these hooks by name; it never imports the doctor. ``trainwell.doctor.live.TrainingDoctor``
implements them and is attached by ``trainwell.api.build_run`` (the CLI uses it); an engine ``Run`` built
without an observer gets :class:`NullObserver`. Observers observe: no hook changes the run's state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from trainwell.config.schema import ExperimentConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.task import Task


class RunObserver(Protocol):
    """The hooks the loop calls, in the order it calls them."""

    def on_fit_start(self, *, resumed: bool) -> None:
        """Before the first step (``resumed``: the run continues a checkpoint)."""

    def maybe_inspect_batch(self, batch: Any, epoch: int, micro: int) -> None:
        """Every micro-batch before it moves to the device (an observer looks at the first few only)."""

    def maybe_debug_losses(self, model: nn.Module, batch: Any) -> None:
        """Every micro-batch on the device, before its forward."""

    def note_initial_loss(self, total: torch.Tensor) -> None:
        """The summed loss of each micro-batch before the first optimizer step of a fresh run (on the device)."""

    def watch_update(self, model: nn.Module, *, step: int, log_step: bool) -> contextlib.AbstractContextManager[None]:
        """Around each optimizer step."""
        ...

    def interval_values(self) -> dict[str, float]:
        """Extra values for the next ``train`` record (e.g. ``update_ratio``)."""
        ...

    def on_train_log(self, values: Mapping[str, Any], model: nn.Module, *, epoch: int, step: int) -> None:
        """After each ``train`` record (every process, the all-reduced values)."""

    def on_epoch_end(self) -> None:
        """After an epoch's training steps."""

    def on_validation(self, record: Mapping[str, Any]) -> None:
        """After each ``val`` record."""

    def report(self, findings: Sequence[Any]) -> None:
        """Findings made elsewhere (the evaluator's own) to record with the observer's."""

    def finish(self, recorded: Sequence[Any] = ()) -> Sequence[Any]:
        """On every exit path of ``fit``: the final findings (``recorded``: the non-finite policy's)."""
        ...


@dataclass(frozen=True)
class ObserverSetup:
    """What an observer may know of the run when it is made (after the plan, before the first step)."""

    cfg: ExperimentConfig
    task: Task
    env: DistEnv
    device_type: str
    total_steps: int
    log_every_steps: int
    run_dir: Path | None
    """Where it may write (rank 0 of a run with a directory), else ``None``."""
    log: logging.Logger


ObserverFactory = Callable[[ObserverSetup], RunObserver]


class NullObserver:
    """Observes nothing (a run built without the doctor)."""

    def on_fit_start(self, *, resumed: bool) -> None:
        pass

    def maybe_inspect_batch(self, batch: Any, epoch: int, micro: int) -> None:
        pass

    def maybe_debug_losses(self, model: nn.Module, batch: Any) -> None:
        pass

    def note_initial_loss(self, total: torch.Tensor) -> None:
        pass

    @contextlib.contextmanager
    def watch_update(self, model: nn.Module, *, step: int, log_step: bool) -> Iterator[None]:
        yield

    def interval_values(self) -> dict[str, float]:
        return {}

    def on_train_log(self, values: Mapping[str, Any], model: nn.Module, *, epoch: int, step: int) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass

    def on_validation(self, record: Mapping[str, Any]) -> None:
        pass

    def report(self, findings: Sequence[Any]) -> None:
        pass

    def finish(self, recorded: Sequence[Any] = ()) -> Sequence[Any]:
        return list(recorded)


def null_observer(setup: ObserverSetup) -> RunObserver:
    """The :data:`ObserverFactory` of a run without the doctor."""
    return NullObserver()
