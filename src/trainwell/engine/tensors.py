"""Small tensor helpers shared by the loop, evaluation, the non-finite guard and the doctor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch


def move_to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """Move every tensor in a (nested) batch to ``device``; non-blocking when the source is pinned.

    ``channels_last``: 4-D floating tensors (images) also switch to the channels-last memory format.
    """
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, channels_last=channels_last) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, channels_last=channels_last) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, channels_last=channels_last) for v in batch)
    return batch


def iter_tensors(batch: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted name, tensor)`` for every tensor in a nested dict / list / tuple batch."""
    if isinstance(batch, torch.Tensor):
        yield prefix or "batch", batch
    elif isinstance(batch, np.ndarray) and batch.dtype.kind in "biuf":
        # NumPy batches (a collate that keeps arrays) get the same report and NaN checks as tensors.
        yield prefix or "batch", torch.from_numpy(np.ascontiguousarray(batch))
    elif isinstance(batch, Mapping):
        for key, value in batch.items():
            yield from iter_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(batch, list | tuple):
        for i, value in enumerate(batch):
            yield from iter_tensors(value, f"{prefix}[{i}]" if prefix else f"[{i}]")
