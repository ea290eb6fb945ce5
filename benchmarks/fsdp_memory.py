"""Per-process memory and step time of ``distributed.strategy: fsdp`` against ``ddp``, on 2 gloo CPU processes.

One MLP of ``--layers`` blocks ``Linear(width, width)`` (default 8 × 1024²: 8.4 M parameters, 34 MB in fp32) with
AdamW, sharded the way the engine shards it (``engine.fsdp.select_units`` + ``shard_model``: every block a unit)
or wrapped in DDP. Each process reports, after the first optimizer step (when AdamW's two moments exist):

* parameters + optimizer state it holds: the sum of its *local* tensor sizes (a DTensor's shard, else the tensor);
* how much its peak RSS (``ru_maxrss``) grew over the baseline after imports: the model as built (whole, on every
  process, before FSDP shards it), gradients, communication buffers, and what the allocator keeps;
* the median time of ``--steps`` training steps (forward, backward, clip by the global norm, AdamW).

Each strategy runs in a fresh pair of processes (peak RSS only grows), one after the other.

    python benchmarks/fsdp_memory.py [--layers 8] [--width 1024] [--batch 64] [--steps 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainwell.config.distributed import FsdpConfig
from trainwell.engine.distributed import destroy_process_group
from trainwell.engine.fsdp import local_value, select_units, shard_model
from trainwell.engine.step import total_grad_norm


def _model(layers: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(layers)))


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(local_value(t).numel() * t.element_size() for t in tensors)


def _measure(strategy: str, args: argparse.Namespace) -> dict[str, float]:
    model = _model(args.layers, args.width)
    if strategy == "fsdp":
        shard_model(model, select_units(model, None), FsdpConfig(), None, torch.device("cpu"))
        train_model: nn.Module = model
    else:
        train_model = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(dist.get_rank()))
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        train_model(x).square().mean().backward()
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, total_grad_norm(model))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    params = _bytes(list(model.parameters()))
    states = _bytes([v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()])
    return {"bytes": params + states, "step_s": statistics.median(times[1:])}


def _worker(rank: int, port: int, args: argparse.Namespace, strategy: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _measure(strategy, args)
    # Growth of the peak RSS over the baseline (Linux: KiB): what building and training the model added.
    result["rss"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024
    results: list = [None, None]
    dist.all_gather_object(results, result)
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.barrier()
    destroy_process_group()  # garbage collected first, or gloo aborts at exit


def _run(strategy: str, args: argparse.Namespace, out: str) -> list[dict[str, float]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_worker, args=(port, args, strategy, out), nprocs=2, start_method="spawn")
    with open(out) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"MLP {args.layers} x Linear({args.width}, {args.width}), AdamW, batch {args.batch} per process, 2 processes")
    with tempfile.TemporaryDirectory() as tmp:
        # Each strategy in a fresh pair of processes: peak RSS (ru_maxrss) only ever grows.
        fsdp, ddp = (_run(name, args, os.path.join(tmp, f"{name}.json")) for name in ("fsdp", "ddp"))
    for rank, (f, d) in enumerate(zip(fsdp, ddp, strict=True)):
        print(
            f"rank {rank}: params+optimizer {f['bytes'] / 2**20:.1f} MiB (fsdp) vs {d['bytes'] / 2**20:.1f} MiB (ddp) "
            f"= {f['bytes'] / d['bytes']:.3f}x | peak RSS growth {f['rss'] / 2**20:.0f} vs {d['rss'] / 2**20:.0f} MiB "
            f"= {f['rss'] / d['rss']:.2f}x | step {f['step_s'] * 1e3:.1f} vs {d['step_s'] * 1e3:.1f} ms "
            f"= {f['step_s'] / d['step_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
