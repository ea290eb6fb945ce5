"""The small regression run shared by the resume and signal tests, and the test-side seams that stop it exactly.

The engine has no test hooks: these tests drive the real ``trainwell train`` through ``trainwell.cli.main``'s
``callbacks`` argument (called after every optimizer step) and by substituting the checkpoint writer
(``trainwell.engine.checkpoint.files.serialize``). Run as a script (``python small_run.py HOOKS_JSON ARGS…``) it is
a ``trainwell`` process that kills itself where the test says, so the crash point is exact.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from trainwell.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/examples/regression.yaml")
# 96 samples / batch 8 = 12 micro-batches = 6 optimizer steps per epoch (accumulation 2), 18 steps in all.
# Dropout makes the result depend on the RNG streams. last.pt is written every 4 steps and at epoch ends,
# log records every 2 steps: a run killed after step 10 has logged a step that its resumption repeats.
SMALL = [
    "data.train_size=96",
    "data.val_size=32",
    "train.batch_size=8",
    "train.grad_accum_steps=2",
    "train.epochs=3",
    "task.hidden=16",
    "task.dropout=0.2",
    "checkpoint.latest_every_steps=4",
    "checkpoint.keep=2",
    "train.log_every=2",
    "train.progress_bar=off",
]


class SignalAtStep:
    """Sends this process ``signals`` right after optimizer step ``step`` (through the real handlers)."""

    def __init__(self, step: int, *signals: signal.Signals) -> None:
        self.step, self.signals = step, signals

    def on_step_end(self, run: Any) -> None:
        if run.state.global_step == self.step:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


class KillAtStep:
    """SIGKILLs this process right after optimizer step ``step`` (a crash: nothing is written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, run: Any) -> None:
        if run.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(nth: int) -> None:
    """Make the ``nth`` checkpoint write of this process stop half-way through its temp file and SIGKILL it."""
    from trainwell.engine.checkpoint import files

    real = files.serialize
    count = 0

    def half_then_die(content: Any, handle: IO[bytes]) -> None:
        nonlocal count
        count += 1
        if count != nth:
            real(content, handle)
            return
        buffer = io.BytesIO()
        real(content, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    files.serialize = half_then_die


def train(run_dir: Path, *extra: str, callbacks: tuple[Any, ...] = ()) -> int:
    """``trainwell train`` of the small run, in this process; returns the exit status."""
    return main(["train", CONFIG, *SMALL, f"run.dir={run_dir}", *extra], callbacks=callbacks)


if __name__ == "__main__":
    hooks = json.loads(sys.argv[1])
    if "kill_in_save" in hooks:
        kill_in_save(int(hooks["kill_in_save"]))
    hooked = [KillAtStep(int(hooks["kill_at_step"]))] if "kill_at_step" in hooks else []
    sys.exit(main(sys.argv[2:], callbacks=hooked))
