"""Stopping on request: SIGTERM, SIGINT and SIGUSR1 finish the current step, write ``last.pt`` and exit.

SLURM sends SIGUSR1 before a job's time limit (``#SBATCH --signal=USR1@120``) and SIGTERM on
pre-emption or ``scancel``; torchrun forwards SIGTERM/SIGINT to its workers and gives them 30 s before
SIGKILL. The handler only records the signal; the loop asks :meth:`StopRequest.should_stop` after each
optimizer step, so a stop always lands on an optimizer-step boundary (never inside gradient
accumulation). A second SIGINT aborts at once (``KeyboardInterrupt``), without writing anything — except while
a checkpoint is being written (:meth:`StopRequest.saving`): that write completes first, so no file is torn.

With several processes every one must stop at the same step, or the others would hang in the next
collective. The processes agree through one tiny all-reduce, but only on logging steps and at epoch
ends — steps that already synchronise the host — so ordinary steps gain no sync. With one process the
check is a read of a Python attribute, every step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from trainwell.engine import distributed as D

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)
EXIT_SIGNAL_BASE = 128
"""A run stopped by signal N exits with status 128 + N, as a shell reports a process killed by N:
SIGINT 130, SIGUSR1 138, SIGTERM 143. ``last.pt`` was written; ``--resume auto`` continues the run."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing ``last.pt``; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: Path | None, position: str, global_step: int) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        self.global_step = global_step
        self.exit_code = EXIT_SIGNAL_BASE + signum
        if checkpoint is not None:
            run_dir = checkpoint.parent.parent
            saved = f"saved '{checkpoint}'. Continue with: trainwell train CONFIG run.dir={run_dir} --resume auto"
        else:
            saved = "no checkpoint written on this process"
        super().__init__(f"Stopped by {signal.Signals(signum).name} at {position}, step {global_step}; {saved}")


class StopRequest:
    """Records stop signals and tells the loop, consistently across processes, when to stop."""

    def __init__(self, env: D.DistEnv) -> None:
        self.env = env
        self.received: int | None = None
        """The first stop signal this process received."""
        self.agreed: int | None = None
        """The signal all processes agreed to stop on (set by :meth:`should_stop`)."""
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}
        self._saving = False
        self._abort_after_save = False

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """A checkpoint write that a second Ctrl-C does not interrupt: it completes, then the abort happens
        (or, when the run is already stopping on a signal, the run stops as planned with 128 + N)."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._abort_after_save and self.agreed is None:
            raise KeyboardInterrupt

    def install(self) -> None:
        """Route the stop signals to this object (main thread only; elsewhere Python allows no handlers)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self._pid = os.getpid()
        # A signal the launcher chose to ignore (nohup, a background job's SIGINT) stays ignored.
        wanted = [signum for signum in STOP_SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]
        self._previous = {signum: signal.signal(signum, self._handle) for signum in wanted}

    def uninstall(self) -> None:
        """Give the signals back to the handlers that were there before :meth:`install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a DataLoader worker forked from the trainer: the main process shuts it down
        if self.received is not None:
            if signum != signal.SIGINT:
                return
            if self._saving:  # an interrupted save is a torn file and a traceback: abort once it is written
                self._abort_after_save = True
                os.write(2, b"trainwell: second Ctrl-C: finishing the checkpoint being written first.\n")
                return
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.received = signum
        name = signal.Signals(signum).name
        again = " Press Ctrl-C again to abort at once." if signum == signal.SIGINT else ""
        # os.write, not logging: a signal handler may interrupt a log call half-way.
        who = f"trainwell (rank {self.env.rank})" if self.env.is_distributed else "trainwell"
        os.write(2, f"{who}: received {name}: finishing this step, then writing last.pt.{again}\n".encode())

    def should_stop(self, *, global_step: int, sync: bool) -> bool:
        """Whether to stop now; with several processes, they decide together only when ``sync``.

        Every process must pass the same ``sync`` at the same step (the loop passes ``True`` on logging
        steps and at epoch ends).
        """
        if self.agreed is not None:
            return True
        if not self.env.is_distributed:
            self.agreed = self.received
        elif sync:
            flag = torch.tensor([self.received or 0], dtype=torch.int64, device=D.collective_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # host sync, on a step that syncs anyway
            self.agreed = int(flag.item()) or None
        return self.agreed is not None

    def wait_for_all(self) -> None:
        """Barrier before exiting, so no process exits (and makes torchrun kill the rest) mid-save."""
        if self.env.is_distributed:
            dist.barrier()
