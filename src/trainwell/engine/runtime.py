"""Process-wide settings made once per run: seeds, PyTorch threads, and a warning for slow CPU autocast."""

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
    """Set PyTorch's intra-op threads: ``requested`` (``train.num_threads``), else ``OMP_NUM_THREADS`` when set (a
    SLURM recipe's, or torchrun's default of 1 per process), else the available cores divided by the processes on this
    machine (torchrun's ``LOCAL_WORLD_SIZE``). Returns the number set.

    The count changes the order of floating-point reductions: processes that must give bitwise the same results (one
    node of two processes vs two nodes of one) need the same count, which ``OMP_NUM_THREADS`` now gives them.

    Why: each process otherwise starts one thread per core, so N processes oversubscribe the cores N times, and a
    busy neighbour makes every step wait for its slowest thread (benchmarks/threads.py on the 2-core development
    machine: 2 threads 3.5× slower beside one busy process, 1 thread unaffected).
    DataLoader workers already run with one thread each (PyTorch sets it in every worker).
    """
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested is None and omp.isdigit() and int(omp) >= 1:
        requested = int(omp)
    threads = requested if requested is not None else max(1, available_cores() // local_processes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cpu_amp_warning(device: torch.device, amp: str) -> str | None:
    """One line when ``train.amp`` runs on a CPU without native instructions for it: autocast then emulates the
    format and a step can be slower than in fp32 (bf16: AVX512-BF16/AMX; fp16: AMX-FP16). ``None`` otherwise."""
    if amp not in ("bf16", "fp16") or device.type != "cpu":
        return None
    probe = "_is_mkldnn_bf16_supported" if amp == "bf16" else "_is_mkldnn_fp16_supported"
    try:
        native = bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        native = False
    if native:
        return None
    instructions = "AVX512-BF16/AMX" if amp == "bf16" else "AMX-FP16"
    return (
        f"train.amp={amp} on a CPU without native {amp} instructions ({instructions}): autocast emulates it and may be "
        f"slower than fp32 on this CPU. Use train.amp=off here; keep {amp} for GPUs."
    )
