"""The files of one run's ``checkpoints/`` directory: names, periodic rotation, best, last, finding one to resume.

``<run>/checkpoints`` holds:

* ``last.pt`` — the newest state: written at every epoch end, every ``checkpoint.latest_every`` inside an epoch,
  at the end of a ``train.max_steps`` budget, and when a signal stops the run;
* ``epoch_NNNN.pt`` (epoch intervals) or ``step_NNNNNNNN.pt`` (step intervals) — every ``checkpoint.every``;
  the newest ``checkpoint.keep`` are kept (``all``: every one);
* ``best.pt`` — the best ``eval.best_metric`` so far; never rotated away;
* ``best_step_NNNNNNNN_<metric>_<value>.pt`` — the ``checkpoint.keep_best`` best (``topk.py``; ``.dcp`` when sharded).

Sharded checkpoints (``checkpoint.format: sharded``, ``sharded.py``) are directories with the same names ending in
``.dcp`` (``last.dcp/``, ``epoch_NNNN.dcp/``, ``best.dcp/``), every process writing its shards; the others are
directories of hard links to ``last.dcp``'s files. Rotation, ``best`` and finding one to resume work alike.

Files written at the same moment are hard links to one file where the filesystem allows it: one
serialization, and no file is ever modified in place, so a link never sees a later write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainwell.config.checkpoint import CheckpointConfig
from trainwell.engine import distributed as D
from trainwell.engine.checkpoint.files import (
    CheckpointError,
    atomic_save,
    fsync_directory,
    link_or_copy,
    load_checkpoint,
)
from trainwell.engine.checkpoint.sharded import (
    META,
    SUFFIX,
    PendingSave,
    link_directory,
    publish,
    read_meta,
    remove,
    write_shards,
)
from trainwell.engine.checkpoint.topk import TopKCheckpoints
from trainwell.engine.distributed import DistEnv

LAST = "last.pt"
BEST = "best.pt"
LAST_SHARDED = "last.dcp"
BEST_SHARDED = "best.dcp"
_PERIODIC = re.compile(r"^(epoch|step)_(\d+)\.(pt|dcp)$")
_TEMP = re.compile(r"^\..+\.tmp-\d+$")


def _written_ns(path: Path) -> int:
    """When a checkpoint was written: a directory's ``trainwell.pt`` (shared by its links, like a file's inode)."""
    meta = path / META
    return (meta if path.is_dir() and meta.exists() else path).stat().st_mtime_ns


@dataclass(frozen=True)
class Rejected:
    """A checkpoint that could not be used, and why."""

    path: Path
    reason: str


class CheckpointManager:
    """Names, writes, rotates and finds the files of one run's ``checkpoints/`` directory (rank 0 only).

    Every write goes through :func:`atomic_save`; old periodic files are deleted only after the new one
    is durable. *When* to write is the loop's decision (``Trainer._maybe_checkpoint``); this class only writes.
    """

    def __init__(
        self,
        directory: Path,
        cfg: CheckpointConfig,
        log: Callable[[str], None] | None = None,
        top_k: TopKCheckpoints | None = None,
        sharded: bool = False,
    ) -> None:
        self.directory = directory
        self.sharded = sharded
        self.last_name, self.best_name = (LAST_SHARDED, BEST_SHARDED) if sharded else (LAST, BEST)
        self.pending: PendingSave | None = None
        """A background sharded save not yet published (``checkpoint.async_save``)."""
        self._saves = 0
        self.process_group: Any = None
        """The process group of background saves (their collectives must not mix with training's on one group)."""
        self.cfg = cfg
        self.log = log or (lambda message: None)
        self.top_k = top_k
        """``checkpoint.keep_best``: the k best checkpoints by value (``topk.py``); ``None`` when 0."""
        self.last_saved_step: int | None = None
        """The optimizer step of the newest ``last.pt`` this manager wrote (``None`` before its first save)."""

    def save(
        self,
        payload: Mapping[str, Any],
        *,
        periodic: str | None = None,
        best: bool = False,
        scored: tuple[int, float] | None = None,
    ) -> list[Path]:
        """``last.pt``, then (as links to it) the periodic file ``periodic`` (rotated), ``best.pt``, and — when
        ``scored`` (the ``(step, value)`` of the evaluation just made) ranks among the k best — a top-k file."""
        last = self.directory / LAST
        atomic_save(payload, last)
        train_state = payload.get("train_state")
        self.last_saved_step = train_state.get("global_step") if isinstance(train_state, Mapping) else None
        written = [last]
        if periodic is not None and self.cfg.keep_count != 0:
            link_or_copy(last, self.directory / periodic)
            written.append(self.directory / periodic)
            self.rotate()
        if best:
            link_or_copy(last, self.directory / BEST)
            written.append(self.directory / BEST)
        if scored is not None and self.top_k is not None:
            written += self.top_k.offer(last, *scored)
        return written

    def save_sharded(
        self,
        payload: dict[str, Any],
        env: DistEnv,
        *,
        periodic: str | None = None,
        best: bool = False,
        scored: tuple[int, float] | None = None,
    ) -> None:
        """Every process: write its shards into a temporary directory (in the background under
        ``checkpoint.async_save``); rank 0 then publishes ``last.dcp`` and links the periodic, best and top-k names
        to it (as :meth:`save` does for files)."""
        self.finish_pending()  # one save at a time: the previous one is published first
        self._saves += 1
        token = D.broadcast_object(os.getpid(), env)  # one temporary name for every process
        last = self.directory / self.last_name
        tmp = self.directory / f".{self.last_name}.tmp-{token}{self._saves:06d}"
        background = self.cfg.async_save and env.is_distributed
        future = write_shards(payload, tmp, self.process_group if background else None, background=background)

        def publish_all() -> None:
            if not env.is_main:
                return
            publish(tmp, last, payload)
            train_state = payload.get("train_state")
            self.last_saved_step = train_state.get("global_step") if isinstance(train_state, Mapping) else None
            if periodic is not None and self.cfg.keep_count != 0:
                link_directory(last, self.directory / Path(periodic).with_suffix(SUFFIX))
                self.rotate()
            if best:
                link_directory(last, self.directory / self.best_name)
            if scored is not None and self.top_k is not None:
                self.top_k.offer(last, *scored)

        if future is None:
            publish_all()
        else:
            self.pending = PendingSave(future, publish_all)

    def finish_pending(self) -> None:
        """Wait for a background save and publish it (every process; nothing to do without one)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.finish()

    def periodic_files(self) -> list[tuple[int, Path]]:
        """``(write time, path)`` of the periodic checkpoints present, oldest first."""
        found = []
        for path in self.directory.glob("*_*"):
            if _PERIODIC.match(path.name):
                found.append((_written_ns(path), path))
        return sorted(found)

    def rotate(self) -> list[Path]:
        """Delete all but the newest ``checkpoint.keep`` periodic checkpoints; returns the deleted files."""
        keep = self.cfg.keep_count
        if keep is None:  # checkpoint.keep: all
            return []
        files = self.periodic_files()
        doomed = [path for _, path in files[: max(0, len(files) - keep)]]
        for path in doomed:
            remove(path)
        if doomed:
            fsync_directory(self.directory)
        return doomed

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files left by a process killed during a save (they were never renamed into place)."""
        stale = [p for p in self.directory.glob(".*.tmp-*") if _TEMP.match(p.name)] if self.directory.is_dir() else []
        for path in stale:
            remove(path)
        return stale

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, newest first (by write time; ``last.pt`` first among equals)."""
        if not self.directory.is_dir():
            return []
        lasts = [self.directory / name for name in (LAST, LAST_SHARDED, f".{LAST_SHARDED}.prev")]
        bests = [self.directory / BEST, self.directory / BEST_SHARDED]
        paths = [*lasts, *(p for _, p in self.periodic_files()), *bests]
        present = [p for p in paths if p.exists()]

        def newest_first(path: Path) -> tuple[int, int, int]:
            match = _PERIODIC.match(path.name)
            rank = 2 if path.name in (LAST, LAST_SHARDED) else 1 if match else 0
            return (-_written_ns(path), -rank, -(int(match.group(2)) if match else 0))

        return sorted(present, key=newest_first)

    def find_resumable(
        self, map_location: str | torch.device = "cpu"
    ) -> tuple[Path, dict[str, Any], list[Rejected]] | None:
        """The newest checkpoint that loads and verifies, with the ones skipped on the way (and why).

        Returns ``None`` when the directory holds no checkpoint at all.

        Raises:
            CheckpointError: there are checkpoints but none is valid (listing each and why); starting
                afresh would overwrite them, so a person should look first.
        """
        rejected: list[Rejected] = []
        for path in self.candidates():
            try:
                payload = read_meta(path) if path.is_dir() else load_checkpoint(path, map_location=map_location)
            except CheckpointError as err:
                rejected.append(Rejected(path, str(err)))
                self.log(f"Skipping checkpoint '{path}': {err}")
                continue
            if "train_state" not in payload:
                rejected.append(Rejected(path, "it holds no training state"))
                continue
            return path, payload, rejected
        if rejected:
            listing = "; ".join(f"{r.path.name}: {r.reason}" for r in rejected)
            raise CheckpointError(
                f"No usable checkpoint in '{self.directory}' ({listing}). Move these files away to start afresh, "
                f"or pass --resume PATH to a good copy."
            )
        return None
