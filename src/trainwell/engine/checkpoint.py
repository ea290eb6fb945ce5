"""Checkpoint files: atomic writes and weights-only loading.

A checkpoint is a dict of tensors and plain containers only, so ``torch.load(weights_only=True)``
opens it and nothing in it can run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and what to do."""


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old file or the new one.

    temp file in the same directory → flush + fsync → atomic rename → fsync the directory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"Could not write checkpoint '{path}': {err.strerror or err}. The previous checkpoints are "
            f"untouched; free disk space or fix permissions and resume."
        ) from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` — never falls back to unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Refusing to load checkpoint '{path}': it cannot be read as weights only ({err}). "
            f"trainwell never unpickles arbitrary objects; re-save it as a state dict of tensors."
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"Checkpoint '{path}' does not hold a dict (got {type(payload).__name__}).")
    return payload
