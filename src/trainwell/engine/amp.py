"""Mixed precision: the autocast context of ``train.amp`` and a way out of it for losses computed in fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_NO_OP = contextlib.nullcontext()


def amp_dtype(mode: str) -> torch.dtype | None:
    """``train.amp`` → the autocast dtype (``None`` = full precision)."""
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` for ``dtype`` on ``device``'s type; a shared no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        return _NO_OP
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Switch autocast off inside ``compute_losses`` (e.g. a cross-entropy in fp32, as ViECap computes it).

    Cast the inputs yourself (``logits.float()``): autocast off only stops *new* low-precision ops. Both the
    CUDA and the CPU autocast states are switched off, so the task need not know the device.
    """
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield
