"""Sharded checkpoints (``checkpoint.format: sharded``): a directory in which every process writes its own shards.

``<run>/checkpoints/last.dcp/`` holds

* ``.metadata`` and ``__<rank>_0.distcp``: ``torch.distributed.checkpoint`` (DCP) files of the model and the
  optimizer state — each process's shards, with the global shape of every tensor, so any world size can read them;
* ``trainwell.pt``: everything else, as in a single-file checkpoint (train state, schedule, loss sums, RNG streams,
  config, versions) plus ``shards``, the sha256 of every DCP file; its own checksum covers all of it.

Publishing is atomic: the directory is written under a temporary name (every file fsynced), ``trainwell.pt`` last,
then renamed into place. A directory whose ``trainwell.pt`` is missing or damaged, or whose DCP files do not match
their sha256, is refused like a damaged file (:func:`read_meta`), and ``--resume auto`` falls back to the newest
valid one. Replacing a name (``last.dcp``) moves the old directory to ``.last.dcp.prev`` first; it stays a valid
candidate until the new one is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

from trainwell.engine.checkpoint.files import (
    CheckpointError,
    CorruptCheckpointError,
    atomic_save,
    fsync_directory,
    load_checkpoint,
)
from trainwell.engine.checkpoint.parts import ModelState, OptimizerState, optimizer_by_position, parameter_order

SUFFIX = ".dcp"
META = "trainwell.pt"
SHARDED_PARTS = ("model", "optimizer")
"""The parts DCP writes (each process its shards); the others go to ``trainwell.pt``."""


@contextlib.contextmanager
def _one_process_is_fine() -> Iterator[None]:
    """DCP warns when it runs without a process group; one process reading or writing shards is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*unavailable or uninitialized")
        yield


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a sharded checkpoint directory (else a single file)."""
    return Path(path).is_dir()


def _digests(directory: Path) -> dict[str, str]:
    """sha256 of every DCP file in ``directory`` (``trainwell.pt`` excluded), by file name."""
    out = {}
    for path in sorted(directory.iterdir()):
        if path.name != META and path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(16 * 2**20), b""):
                    digest.update(block)
            out[path.name] = digest.hexdigest()
    return out


def write_shards(payload: dict[str, Any], tmp: Path, process_group: Any = None, *, background: bool = False) -> Any:
    """Every process writes its shards of the model and optimizer into ``tmp`` (a collective); returns the
    ``dcp.async_save`` future when ``background``, else ``None``. Nothing is published here (:func:`publish`)."""
    shards = {name: payload[name] for name in SHARDED_PARTS}
    writer = dcp.FileSystemWriter(tmp, sync_files=True)  # type: ignore[attr-defined]  # each file fsynced before done
    try:
        if background:
            return dcp.async_save(shards, storage_writer=writer, process_group=process_group)  # type: ignore[attr-defined]
        with _one_process_is_fine():
            dcp.save(shards, storage_writer=writer, process_group=process_group)  # type: ignore[attr-defined]
    except OSError as err:
        raise CheckpointError(f"Could not write the checkpoint shards to '{tmp}': {err}.") from err
    return None


def publish(tmp: Path, target: Path, payload: dict[str, Any]) -> None:
    """Rank 0, once every shard is in ``tmp``: write ``trainwell.pt`` (the other parts and the shards' sha256), then
    rename ``tmp`` to ``target`` atomically."""
    meta = {name: value for name, value in payload.items() if name not in SHARDED_PARTS}
    meta["shards"] = _digests(tmp)
    atomic_save(meta, tmp / META)  # last: a directory without it is incomplete
    fsync_directory(tmp)
    replace_directory(tmp, target)


def replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved to ``.<name>.prev`` first, removed after."""
    previous = target.with_name(f".{target.name}.prev")
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    os.replace(source, target)
    fsync_directory(target.parent)
    shutil.rmtree(previous, ignore_errors=True)


def link_directory(source: Path, target: Path) -> None:
    """``target`` with ``source``'s files (hard links where possible, else copies), published atomically."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, tmp / path.name)
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(path, tmp / path.name)
            with open(tmp / path.name, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_directory(tmp)
    replace_directory(tmp, target)


def remove(path: Path) -> None:
    """Delete a checkpoint, file or directory."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_meta(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``trainwell.pt`` of a sharded checkpoint, verified (its checksum, and every DCP file against its sha256).

    Raises:
        CorruptCheckpointError: a file is missing, extra or damaged (naming them).
    """
    directory = Path(directory)
    if not (directory / META).is_file():
        raise CorruptCheckpointError(f"Sharded checkpoint '{directory}' has no {META}: it was not completely written.")
    meta = load_checkpoint(directory / META, map_location=map_location)
    expected, actual = meta.pop("shards", {}), _digests(directory)
    if expected != actual:
        bad = sorted(n for n in expected.keys() | actual.keys() if expected.get(n) != actual.get(n))
        raise CorruptCheckpointError(
            f"Sharded checkpoint '{directory}' is damaged: {', '.join(bad[:5])} missing or not matching their sha256."
        )
    return meta


def read_sharded(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A whole checkpoint payload, the model and optimizer read into this run's own layout (its shards under FSDP,
    whole tensors otherwise) — at any world size: DCP reshards by the tensors' global shapes (a collective).
    The optimizer comes in ``torch.optim``'s layout, as in a single-file checkpoint."""
    meta = read_meta(directory)
    template = {
        "model": ModelState(model, full=False).state_dict(),
        "optimizer": OptimizerState(model, optimizer, full=False).state_dict(),
    }
    with _one_process_is_fine():
        dcp.load(template, checkpoint_id=str(directory))  # type: ignore[attr-defined]
    template["optimizer"] = optimizer_by_position(template["optimizer"], parameter_order(model, optimizer))
    return {**meta, **template}


def read_model_weights(directory: str | Path) -> dict[str, Any]:
    """``trainwell.pt``'s content plus the *whole* model state dict, in one process (``export``, ``eval``)."""
    meta = read_meta(directory)
    with _one_process_is_fine():
        loaded = _load_state_dict_from_keys({"model"}, checkpoint_id=str(directory))
    return {**meta, "model": loaded["model"]}


class PendingSave:
    """A sharded checkpoint being written in the background (``checkpoint.async_save``), published when done."""

    def __init__(self, future: Future[Any], publish: Callable[[], None]) -> None:
        self.future = future
        self.publish = publish

    def finish(self) -> None:
        """Wait for the shards (every process), then publish (the callback does nothing off rank 0)."""
        self.future.result()
        self.publish()
