"""Process groups from the torchrun environment, samplers, and the few collectives the engine uses.

No launcher of our own: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR and we read
them. With one process (no torchrun) nothing here creates a process group.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the console, files, TensorBoard and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """Read the torchrun environment (defaults: one process)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def select_device(requested: str, env: DistEnv) -> torch.device:
    """``auto`` → this process's local GPU if there is one, else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto.")
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device(requested)


def init_process_group(env: DistEnv, device: torch.device, backend: str, timeout_s: float) -> None:
    """Create the default process group when running under torchrun with more than one process."""
    if not env.is_distributed or dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average a tensor over processes (called on logging steps only)."""
    if env.is_distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's value of ``obj`` on every process."""
    if not env.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class TrainSampler(Sampler[int]):
    """Shuffled training order, a pure function of ``(seed, epoch)``, sharded over processes.

    Every process draws the same global permutation and takes every ``world_size``-th element, so
    ``world_size`` processes with per-process batch B/W see exactly the samples one process with
    batch B would. The permutation is padded (by wrapping) to a multiple of ``world_size`` so that all
    processes run the same number of steps (DDP requires it). ``start`` skips the first samples of
    this process's shard — used to continue an interrupted epoch with exactly the next batch.
    """

    def __init__(self, num_samples: int, *, seed: int, env: DistEnv, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.env = env
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0
        self.per_process = -(-num_samples // env.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation; begin ``start`` samples into this process's shard."""
        self.epoch = epoch
        self.start = start

    def _global_order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self._global_order()
        padded_len = self.per_process * self.env.world_size
        if padded_len > self.num_samples:
            order = torch.cat([order, order[: padded_len - self.num_samples]])
        shard = order[self.env.rank :: self.env.world_size]
        return iter(shard[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_process - self.start


def shard_range(num_samples: int, env: DistEnv) -> range:
    """Contiguous evaluation shard of this process: no padding, sizes differ by at most one."""
    base, extra = divmod(num_samples, env.world_size)
    start = env.rank * base + min(env.rank, extra)
    return range(start, start + base + (1 if env.rank < extra else 0))
