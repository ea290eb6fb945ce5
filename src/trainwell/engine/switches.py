"""Small stateful parts the loop consults at fixed points: the augmentation switch of the last epochs
(``data.disable_augmentation_last_epochs``) and wall-clock checkpoints (``checkpoint.every_minutes``)."""

from __future__ import annotations

import logging
import time

from trainwell.engine import distributed as D
from trainwell.engine.task import Task


class AugmentationSwitch:
    """``data.disable_augmentation_last_epochs: N``: augmentation off from epoch ``epochs - N`` on.

    A function of the epoch alone, so a resumed run is in the same state; the switch is logged once.
    """

    def __init__(self, task: Task, last_epochs: int, num_epochs: int, log: logging.Logger) -> None:
        self.task, self.last_epochs, self.num_epochs, self.log = task, last_epochs, num_epochs, log
        self._enabled: bool | None = None

    def apply(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) starts: tell the task whether to augment."""
        if self.last_epochs <= 0:
            return
        enabled = epoch < self.num_epochs - self.last_epochs
        self.task.set_augmentation(enabled)
        if not enabled and self._enabled is not False:
            self.log.info(
                f"Augmentation off from epoch {epoch + 1} of {self.num_epochs} "
                f"(data.disable_augmentation_last_epochs={self.last_epochs})"
            )
        self._enabled = enabled


class WallClockCheckpoints:
    """``checkpoint.every_minutes``: whether that much time has passed since the last checkpoint (``None``: off)."""

    def __init__(self, minutes: float | None, env: D.DistEnv) -> None:
        self.minutes, self.env = minutes, env
        self._last_save = time.monotonic()

    def saved(self) -> None:
        """A checkpoint was just written: the clock starts again."""
        self._last_save = time.monotonic()

    def due(self) -> bool:
        """Rank 0's clock decides for every process (they save together: the RNG states are gathered). Call it
        only where the processes synchronise anyway (logging steps): one small broadcast."""
        if self.minutes is None:
            return False
        return bool(D.broadcast_object(time.monotonic() - self._last_save >= 60.0 * self.minutes, self.env))
