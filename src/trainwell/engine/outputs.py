"""Where a run writes: its directory (opened and locked by rank 0), ``train.log``, ``metrics.jsonl`` and its config.

A new run starts writing at once. A run that continues the directory's run (``--resume``) writes nothing until
its checkpoint has been checked against this run's model and config: a refused resume leaves the directory as
it was. See ``docs/run_directory.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainwell.config.schema import ExperimentConfig, config_to_yaml
from trainwell.engine import distributed as D
from trainwell.engine.checkpoint.files import atomic_write_text
from trainwell.engine.logging import MetricsWriter
from trainwell.engine.rundir import RunDir, RunDirError, open_run_dir, resume_config_name, write_status


@dataclass
class RunOutputs:
    """A run's directory (``None`` when it writes nothing), its ``metrics.jsonl`` / TensorBoard writer and lock."""

    run_dir: Path | None
    is_writer: bool
    """Rank 0 of a run with a directory."""
    metrics: MetricsWriter
    opened: RunDir | None = None
    """Rank 0's handle: the held lock, whether the run continues the directory's run, what was moved aside."""
    committed: bool = True
    """Whether this run writes into the directory yet (a continuing run: only once its resume was checked)."""

    @classmethod
    def open(cls, cfg: ExperimentConfig, env: D.DistEnv, *, write_outputs: bool, existing_run: str) -> RunOutputs:
        """Open (rank 0: create and lock) the run directory; every process learns it, or the same error.

        Raises:
            RunDirError: the directory is in use, already holds a run (``existing_run="refuse"``) or cannot be
                created or locked.
        """
        if not write_outputs:
            return cls(None, False, MetricsWriter(None, enabled=False))
        opened, error = None, None
        if env.is_main:
            try:
                opened = open_run_dir(cfg.run.name, cfg.run.dir, existing=existing_run)
            except RunDirError as err:
                error = str(err)
        run_dir, error = D.broadcast_object((opened.path if opened else None, error), env)
        if error is not None:
            raise RunDirError(error)
        return cls(run_dir, env.is_main, MetricsWriter(None, enabled=False), opened, committed=not env.is_main)

    @property
    def continuing(self) -> bool:
        return self.opened is not None and self.opened.continuing

    def commit(self, cfg: ExperimentConfig, make_metrics: Callable[[Path], MetricsWriter] | None = None) -> str:
        """Start writing: the config — ``config.yaml`` for a new run, ``config.resume-<n>.yaml`` beside it for a
        continued one (history is never rewritten) — and ``metrics.jsonl``. Returns the config file's name.

        Raises:
            RunDirError: the directory refused the write (disk full, permissions), naming the file.
        """
        assert self.run_dir is not None and not self.committed
        name = resume_config_name(self.run_dir) if (self.run_dir / "config.yaml").exists() else "config.yaml"
        try:
            atomic_write_text(self.run_dir / name, config_to_yaml(cfg))
            self.metrics = make_metrics(self.run_dir) if make_metrics else MetricsWriter(self.run_dir, enabled=True)
        except OSError as err:
            raise RunDirError(
                f"Cannot write into the run directory '{self.run_dir}': {err.strerror or err} "
                f"('{err.filename or self.run_dir / name}'). Free disk space or fix its permissions."
            ) from None
        self.committed = True
        return name

    def record_crash(self, err: BaseException) -> None:
        """``status.json``: ``crashed`` with the message — in a directory this run writes, and if it still can."""
        if self.is_writer and self.committed:
            with contextlib.suppress(OSError):
                write_status(self.run_dir, "crashed", step=0, error=f"{type(err).__name__}: {err}")

    def close(self) -> None:
        """Close the writers and give the lock back (idempotent; the kernel also drops it if the process dies)."""
        with contextlib.suppress(Exception):
            self.metrics.close()
        if self.opened is not None:
            self.opened.lock.release()
