"""Process-wide settings made once per run: seeds, PyTorch threads, and a warning for slow CPU bf16."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CUDA included) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(requested: int | None) -> int:
    """Set PyTorch's intra-op threads: ``requested``, or the available cores divided by the processes on this
    machine (torchrun's ``LOCAL_WORLD_SIZE``). Returns the number set.

    Why: each process otherwise starts one thread per core, so N processes oversubscribe the cores N times, and a
    busy neighbour makes every step wait for its slowest thread (benchmarks/threads.py on the 2-core development
    machine: 2 threads 3.5× slower beside one busy process, 1 thread unaffected).
    DataLoader workers already run with one thread each (PyTorch sets it in every worker).
    """
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = requested if requested is not None else max(1, available_cores() // local_processes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cpu_bf16_warning(device: torch.device, amp: str) -> str | None:
    """A warning when bf16 autocast runs on a CPU without native bf16 (it is emulated, several times slower)."""
    if amp != "bf16" or device.type != "cpu":
        return None
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    if native:
        return None
    return (
        "train.amp=bf16 on a CPU without native bf16 instructions (AVX512-BF16/AMX): autocast emulates it, and steps "
        "can be several times slower than fp32. Use train.amp=off on this machine; keep bf16 for GPUs."
    )
