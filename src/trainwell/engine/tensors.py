"""Small tensor helpers shared by the loop and evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return type(batch)(move_to_device(v, device, channels_last=channels_last) for v in batch)
    return batch
