"""Intervals in optimizer steps or epochs (``500``, ``"1ep"``, ``"0.2ep"``), resolved once the loader length is known.

* steps (``500``): fires when the global step is a multiple of 500;
* whole epochs (``"2ep"``): fires at the end of every second epoch;
* fractions of an epoch (``"0.2ep"``): fires every round(0.2 × steps per epoch) steps *counted within the epoch*
  (ViECap's ``(idx + 1) % (len(loader) // 5) == 0``), so it stays aligned to the epoch whatever the batch
  size, world size or dataset size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A resolved interval; ``should_fire`` is a cheap integer test (it runs every step)."""

    steps: int = 0
    """Every this many steps (global, or within the epoch when ``in_epoch``); 0 = not step-based."""
    epochs: int = 0
    """Every this many whole epochs, at the epoch end; 0 = not epoch-based."""
    in_epoch: bool = False
    text: str = "off"
    """How the banner prints it, e.g. ``"0.2ep = every 25 steps"``."""

    @property
    def is_off(self) -> bool:
        return self.steps == 0 and self.epochs == 0

    def fires_at_step(self, global_step: int, step_in_epoch: int) -> bool:
        """After an optimizer step (``step_in_epoch`` counts the epoch's optimizer steps done, from 1)."""
        if self.steps == 0:
            return False
        return (step_in_epoch if self.in_epoch else global_step) % self.steps == 0

    def fires_at_epoch_end(self, epochs_done: int) -> bool:
        return self.epochs > 0 and epochs_done % self.epochs == 0


def resolve_interval(value: int | str | None, steps_per_epoch: int) -> Interval:
    """Turn a config value into an :class:`Interval` (the schema has already checked its form)."""
    if value is None or value == 0:
        return Interval()
    if isinstance(value, int):
        return Interval(steps=value, text=f"every {value} steps")
    number = float(value.strip()[:-2])
    if number == 0:
        return Interval()
    if number >= 1 and number.is_integer():
        return Interval(epochs=int(number), text=f"every {int(number)} epoch(s)")
    steps = max(1, round(number * steps_per_epoch))
    return Interval(steps=steps, in_epoch=True, text=f"{value} = every {steps} of {steps_per_epoch} steps per epoch")


def resolve_milestone(value: int | str, steps_per_epoch: int) -> int:
    """A step-decay milestone in optimizer steps (``"35ep"`` → 35 × steps per epoch)."""
    if isinstance(value, int):
        return value
    return round(float(value.strip()[:-2]) * steps_per_epoch)
