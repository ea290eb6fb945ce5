"""Helpers for the multi-process tests: spawn W gloo processes on a free port, and a task that fails.

Not a test module (no ``test_`` prefix). Spawned children import it by name (multiprocessing hands them
the parent's ``sys.path``); torchrun children find it through ``PYTHONPATH``.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainwell.engine.distributed import destroy_process_group
from trainwell.tasks.regression import RegressionTask, RegressionTaskConfig

REPO = Path(__file__).resolve().parents[2]
PYTHON_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_env_vars(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What torchrun would set for one local process."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., None], init_group: bool, args: tuple) -> None:
    os.environ.update(torchrun_env_vars(rank, world_size, port))
    torch.set_num_threads(1)
    if init_group:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    try:
        fn(rank, world_size, *args)
        if init_group and dist.is_initialized():
            # Nobody tears its gloo connections down while a peer still uses them (a peer's gloo thread could
            # see the closed socket and abort its process).
            dist.barrier()
    finally:
        destroy_process_group()  # the engine's: garbage collected first (see its docstring)


def spawn(fn: Callable[..., None], world_size: int, *args: Any, init_group: bool = True) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes; re-raise any failure.

    With ``init_group`` the default gloo group exists when ``fn`` starts; otherwise ``fn`` finds the
    torchrun environment variables and creates it (as the Trainer does).
    """
    mp.start_processes(
        _entry,
        args=(world_size, free_port(), fn, init_group, args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )


def evaluate_as_rank(task: Any, model: Any, dataset: Any, rank: int, world_size: int, outputs_dir: Path) -> Any:
    """``engine.evaluation.evaluate`` on CPU as process ``rank`` of ``world_size`` (batches of 2, no autocast);
    rank 0 writes the task's output files under ``outputs_dir``. Returns the ``EvalResult``."""
    import contextlib

    import torch

    from trainwell.engine.distributed import DistEnv
    from trainwell.engine.evaluation import evaluate

    return evaluate(
        task=task,
        model=model,
        dataset=dataset,
        evaluator=task.build_evaluator(),
        batch_size=2,
        device=torch.device("cpu"),
        env=DistEnv(rank=rank, world_size=world_size, local_rank=rank),
        autocast=contextlib.nullcontext,
        outputs_dir=outputs_dir if rank == 0 else None,
    )


def torchrun_command(nproc: int, *trainwell_args: str) -> list[str]:
    """``torchrun --nproc_per_node=N -m trainwell ARGS`` with a private rendezvous port."""
    return [
        str(PYTHON_BIN / "torchrun"),
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "trainwell",
        *trainwell_args,
    ]


def subprocess_env() -> dict[str, str]:
    """Environment for torchrun children: this directory importable (for :class:`FailingTask`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@dataclass
class FailingTaskConfig(RegressionTaskConfig):
    """The regression task, plus where and how to fail."""

    class_path: str = "distributed_helpers:FailingTask"
    fail_rank: int = 1
    """The rank that fails (others run normally)."""
    fail_at_batch: int = 3
    """Training forward (counted from 1) at which it fails."""
    fail_mode: str = "raise"
    """``raise`` an exception, or ``hang`` (sleep far longer than the distributed timeout)."""
    fail_first_attempt_only: bool = False
    """Fail only before torchrun's first restart (``TORCHELASTIC_RESTART_COUNT`` 0): an elastic job then recovers."""


class FailingTask(RegressionTask):
    """Regression task whose training forward raises (or hangs) on one rank only."""

    Config = FailingTaskConfig
    cfg: FailingTaskConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_forwards = 0

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.num_forwards += 1
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        if self.cfg.fail_first_attempt_only and restarted:
            return super().compute_losses(model, batch)
        if int(os.environ.get("RANK", "0")) == self.cfg.fail_rank and self.num_forwards == self.cfg.fail_at_batch:
            if self.cfg.fail_mode == "hang":
                # A stuck process that torchrun's SIGTERM ends at once. (The trainer's own handler would
                # finish the step first, and a process stuck inside C code ignores SIGTERM: torchrun
                # then SIGKILLs it after its 30 s grace period — correct, but too slow for a test.)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(300)
            raise RuntimeError(f"injected failure on rank {self.cfg.fail_rank}")
        return super().compute_losses(model, batch)


@dataclass
class RecordingTaskConfig(RegressionTaskConfig):
    """The regression task, plus where to record the training sample indices."""

    class_path: str = "distributed_helpers:RecordingTask"
    record_dir: str = ""
    """Each process appends the dataset indices of every training micro-batch to ``<record_dir>/rank<R>.txt``."""


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], "index": index}


class RecordingTask(RegressionTask):
    """Regression task that records which training samples each process's backward-bound forwards saw."""

    Config = RecordingTaskConfig
    cfg: RecordingTaskConfig

    def build_datasets(self) -> tuple[Any, Any]:
        train, val = super().build_datasets()
        return _Indexed(train), val

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if torch.is_grad_enabled() and "index" in batch:  # training steps only (not the doctor's no_grad probes)
            path = Path(self.cfg.record_dir) / f"rank{os.environ.get('RANK', '0')}.txt"
            with open(path, "a") as handle:
                handle.write(" ".join(str(int(i)) for i in batch["index"]) + "\n")
        return super().compute_losses(model, batch)
