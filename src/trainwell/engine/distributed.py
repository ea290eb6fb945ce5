"""Process groups from the torchrun environment, samplers, DDP wrapping, and the few collectives we use.

No launcher of our own: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT and
we read them. With one process (no torchrun) nothing here creates a process group and every collective
is a no-op.

Collectives work on both backends: NCCL only moves CUDA tensors, gloo (in this engine) CPU tensors, so
every tensor goes through :func:`collective_device` first. Object collectives (``*_object``) are kept
for a handful of small values (a run directory, an error message, shard sizes); bulk data (evaluation
results) travels as tensors.
"""

from __future__ import annotations

import datetime
import gc
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainwell.config.distributed import DistributedConfig
from trainwell.engine.fsdp import UnitChooser, select_units, shard_model


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
        """More than one process: collectives are real."""
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """Read the torchrun environment (defaults: one process)."""
    env = DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not 0 <= env.rank < env.world_size:
        raise RuntimeError(f"RANK={env.rank} is not in [0, WORLD_SIZE={env.world_size}); launch with torchrun.")
    return env


def select_device(requested: str, env: DistEnv) -> torch.device:
    """``auto`` → this process's local GPU (``cuda:LOCAL_RANK``) if there is one, else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto.")
        visible = torch.cuda.device_count()
        if env.local_rank >= visible:
            raise RuntimeError(
                f"LOCAL_RANK={env.local_rank} but only {visible} GPU(s) are visible on this node: start at most "
                f"{visible} processes per node (torchrun --nproc_per_node={visible}) or fix CUDA_VISIBLE_DEVICES."
            )
        # The current device must be set before NCCL starts: object collectives and NCCL itself use it.
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device(requested)


def init_process_group(env: DistEnv, device: torch.device, backend: str, timeout_s: float) -> None:
    """Create the default process group when running under torchrun with more than one process.

    ``timeout_s`` bounds every collective: a peer that died or hangs ends the job with an error (gloo
    raises; NCCL's watchdog aborts the process) instead of a silent hang.
    """
    if not env.is_distributed or dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError(
            f"distributed.backend=nccl needs CUDA devices, but this process runs on {device}; "
            f"use distributed.backend=gloo (or auto) on CPU."
        )
    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device if backend == "nccl" else None,
    )


def destroy_process_group() -> None:
    """Tear the default process group down (no-op without one).

    Collect garbage first: objects that hold the group (DDP's reducer inside the Trainer) can sit in a
    reference cycle — the first optimizer built in a process lazily imports ``torch._dynamo``, whose
    import keeps the calling frames, the Trainer's ``__init__`` among them, in a cycle. Left to the
    interpreter's shutdown, gloo's worker threads are then destroyed too late and the process aborts
    ("terminate called without an active exception", exit -6) after a successful run.
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where tensors must live for the default group's collectives: the current GPU for NCCL, else CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- model wrapping ---------------------------------------------------------------------------------


def wrap_model(
    model: nn.Module,
    device: torch.device,
    env: DistEnv,
    cfg: DistributedConfig,
    units: UnitChooser | None = None,
    amp: torch.dtype | None = None,
) -> tuple[nn.Module, nn.Module]:
    """``(model, ddp_model)``: the (possibly SyncBatchNorm-converted) module and the one to train through.

    With one process both are the same module. The bare ``model`` is what the optimizer, checkpoints and
    evaluation use; ``ddp_model`` only runs training forwards (its backward all-reduces the gradients).
    ``distributed.strategy=fsdp``: both are the model, sharded in place by FSDP2 (``engine/fsdp.py``) over the
    modules ``units(model)`` names (default: every direct child with parameters), with ``amp`` as its
    mixed-precision policy.
    """
    if not env.is_distributed:
        return model, model
    if cfg.sync_batchnorm:
        if device.type != "cuda":
            raise RuntimeError(
                "distributed.sync_batchnorm=true needs CUDA devices (PyTorch's SyncBatchNorm does not run on "
                "CPU); set distributed.sync_batchnorm=false for CPU runs."
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    if cfg.strategy == "fsdp":
        # Rank 0's weights everywhere (as DDP does), then each process keeps its slice of them.
        for tensor in [*model.parameters(), *model.buffers()]:
            staged = tensor.data.to(collective_device())
            dist.broadcast(staged, src=0)
            tensor.data.copy_(staged)
        chosen = units(model) if units is not None else select_units(model, cfg.fsdp.units)
        sharded = shard_model(model, chosen, cfg.fsdp, amp, device)
        return sharded, sharded
    # DDP broadcasts rank 0's parameters and buffers here, so every process starts from the same weights.
    ddp_model = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=cfg.find_unused_parameters,
    )
    return model, ddp_model


# -- small collectives ------------------------------------------------------------------------------


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average a tensor over processes (the loop calls it on logging steps only)."""
    if not env.is_distributed:
        return values
    reduced = values.detach().to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    reduced /= env.world_size
    return reduced.to(values.device)


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's value of a small picklable ``obj`` on every process."""
    if not env.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=collective_device())
    return box[0]


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's value of a small picklable ``obj``, in rank order, on every process."""
    if not env.is_distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def require_same_on_all_ranks(value: Any, what: str, env: DistEnv) -> None:
    """Raise on every process unless ``value`` (small, picklable) is the same on all of them.

    For things whose mismatch would otherwise surface as a hang (a different number of training steps)
    or as a confusing coverage error (a validation set of a different length).
    """
    values = all_gather_object(value, env)
    if any(v != values[0] for v in values):
        raise RuntimeError(
            f"{what} differs between processes: {values} (rank order). Every process must build the same "
            f"data; check for rank-dependent file lists, filtering or randomness in the dataset."
        )


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process, in place.

    DDP broadcasts buffers at the start of each training forward, but that forward then updates them
    locally, so after training each process holds slightly different statistics. Evaluation calls this
    so that every process scores rank 0's model — the one the checkpoints hold.
    """
    if not env.is_distributed:
        return
    device = collective_device()
    for buffer in model.buffers():
        staged = buffer.data if buffer.device == device else buffer.data.to(device)
        dist.broadcast(staged, src=0)
        if staged is not buffer.data:
            buffer.data.copy_(staged)


# -- gathering per-sample rows of different counts --------------------------------------------------

GATHER_CHUNK_BYTES = 64 * 2**20
"""Upper bound on what one gather step holds on the destination, whatever the number of processes."""


def _row_layout(tensors: dict[str, torch.Tensor]) -> tuple[int | None, dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    counts = {t.shape[0] if t.dim() else None for t in tensors.values()}
    rows = 0 if not counts else counts.pop() if len(counts) == 1 else None
    return rows, {name: (t.dtype, tuple(t.shape[1:])) for name, t in tensors.items()}


def gather_rows(
    tensors: dict[str, torch.Tensor], env: DistEnv, *, chunk_bytes: int = GATHER_CHUNK_BYTES
) -> dict[str, torch.Tensor] | None:
    """Concatenate per-process tensors along dim 0, in rank order, on rank 0 (``None`` elsewhere).

    Every tensor of one process has the same number of rows ``n_r``; ``n_r`` may differ between
    processes (0 included). A process with no rows may hold tensors of any shape: only processes with
    rows must agree on names, dtypes and per-row shapes. Returns CPU tensors of ``(sum n_r, ...)``.

    How: one small ``all_gather_object`` of row counts and layouts (so that every process takes the same
    decision, error included, and none is left waiting), then the rows themselves, packed as raw bytes
    ``(n_r, bytes_per_row)`` so that any dtype travels on NCCL and gloo alike, padded to the largest
    count and sent with ``dist.gather`` in chunks. Rank 0 holds the result (``sum n_r × bytes_per_row``)
    plus one chunk of at most ``chunk_bytes``: memory grows with the number of samples, not processes.
    """
    rows, layout = _row_layout(tensors)
    problem = None
    if rows is None:
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        problem = f"rank {env.rank}: per-sample results need the same first dimension, got shapes {shapes}"
    metas = all_gather_object((rows, layout, problem), env)

    problems = [meta[2] for meta in metas if meta[2] is not None]
    if problems:
        raise ValueError("Cannot gather per-sample results: " + "; ".join(problems))
    counts = [int(meta[0]) for meta in metas]
    # The layout of the first process that has rows (rank 0 when none has any) is the reference.
    ref_rank = next((r for r, n in enumerate(counts) if n > 0), 0)
    ref_layout = metas[ref_rank][1]
    for r, (n, other, _) in enumerate(metas):
        if n > 0 and other != ref_layout:
            raise ValueError(
                f"Per-sample results differ between processes: rank {ref_rank} has {ref_layout}, rank {r} has "
                f"{other} (name: (dtype, per-sample shape)). Every process must produce the same keys and shapes."
            )

    names = list(ref_layout)
    widths = [math.prod(shape) * dtype.itemsize for dtype, shape in ref_layout.values()]
    row_bytes = sum(widths)
    total = sum(counts)
    local = _pack(tensors, names, counts[env.rank], row_bytes)

    if not env.is_distributed:
        packed: torch.Tensor | None = local
    elif row_bytes == 0:  # nothing to send (no results, or zero-size ones)
        packed = torch.empty((total, 0), dtype=torch.uint8) if env.is_main else None
    else:
        packed = _gather_packed(local, counts, row_bytes, env, chunk_bytes)
    if packed is None:
        return None

    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, width in zip(names, widths, strict=True):
        dtype, shape = ref_layout[name]
        column = packed[:, offset : offset + width].contiguous()
        out[name] = column.view(dtype).reshape(total, *shape)
        offset += width
    return out


def _pack(tensors: dict[str, torch.Tensor], names: list[str], rows: int, row_bytes: int) -> torch.Tensor:
    """``(rows, row_bytes)`` uint8: each row holds one sample's values of every tensor, as raw bytes."""
    if rows == 0:
        return torch.empty((0, row_bytes), dtype=torch.uint8)
    parts = [tensors[name].detach().cpu().contiguous().reshape(rows, -1).view(torch.uint8) for name in names]
    return torch.cat(parts, dim=1)


def _gather_packed(
    local: torch.Tensor, counts: list[int], row_bytes: int, env: DistEnv, chunk_bytes: int
) -> torch.Tensor | None:
    """Gather the packed rows of every process on rank 0, chunk by chunk (same steps on every process)."""
    device = collective_device()
    max_rows = max(counts)
    # All processes' pieces of one chunk together stay under chunk_bytes on the destination.
    step = max(1, chunk_bytes // (row_bytes * env.world_size))
    starts = [sum(counts[:r]) for r in range(env.world_size)]
    out = torch.empty((sum(counts), row_bytes), dtype=torch.uint8) if env.is_main else None
    for begin in range(0, max_rows, step):
        size = min(step, max_rows - begin)
        piece = torch.zeros((size, row_bytes), dtype=torch.uint8, device=device)
        mine = local[begin : begin + size]
        piece[: mine.shape[0]] = mine.to(device)
        received = [torch.empty_like(piece) for _ in range(env.world_size)] if env.is_main else None
        dist.gather(piece, received, dst=0)
        if out is not None and received is not None:
            for r, got in enumerate(received):
                valid = max(0, min(size, counts[r] - begin))
                if valid:
                    out[starts[r] + begin : starts[r] + begin + valid] = got[:valid].cpu()  # host sync (NCCL)
    return out


# -- evaluation shards ------------------------------------------------------------------------------


def shard_range(num_samples: int, env: DistEnv) -> range:
    """Contiguous evaluation shard of this process: no padding, sizes differ by at most one.

    Lower ranks take the extra samples, so rank 0 has the most (and has samples whenever any exist).
    """
    base, extra = divmod(num_samples, env.world_size)
    start = env.rank * base + min(env.rank, extra)
    return range(start, start + base + (1 if env.rank < extra else 0))
