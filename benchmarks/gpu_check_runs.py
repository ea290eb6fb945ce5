"""The runs behind ``benchmarks/gpu_check.py``, each in its own process: measured trainwell runs, the
hand-written loop they are compared with, and a run that SIGKILLs itself mid-epoch.

    python benchmarks/gpu_check_runs.py measure CONFIG --device cuda --amp bf16 fp16 --steps 60 --repeats 3 \
        --out measure.json [KEY=VALUE ...]
    python benchmarks/gpu_check_runs.py killed CONFIG --kill-at auto [KEY=VALUE ...]   # dies by SIGKILL

The engine has no test hooks, so the probes sit in the one place a task owns: ``compute_losses``. The
instance's method is wrapped (the class is untouched); the k-th call is the start of optimizer step k
(``train.grad_accum_steps=1``). A *window* of steps ``[first, last)`` is everything between the k=first
and the k=last call: the forward, backward and optimizer step of steps first … last-1. Runs are kept
inside one epoch and use ``train.log_every`` larger than the run, so no logging step, evaluation or
checkpoint falls in a window; what remains is the per-step path whose "no host sync" claim is checked.

Syncs are counted with ``torch.cuda.set_sync_debug_mode("warn")`` inside the window (each synchronising
CUDA call raises a Python warning there, recorded with its Python call site), which is the "error" mode's
proof without aborting the run at the first offender. Uses trainwell's public API only: ``load_config``,
``build_task``, ``Trainer(build_run(cfg, task)).fit()``, the task contract.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainwell import Trainer, build_run, build_task, load_config

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# -- the probe --------------------------------------------------------------------------------------
@dataclass
class WindowResult:
    """What one probed run measured between its window's first and last step."""

    steps: int = 0
    seconds: float = 0.0
    syncs: int = 0
    sync_sites: list[str] = field(default_factory=list)
    peak_memory_mib: float | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def summarise_syncs(records: Sequence[warnings.WarningMessage], top: int = 8) -> tuple[int, list[str]]:
    """The number of sync warnings among ``records`` and their most frequent Python call sites."""
    syncs = [r for r in records if "synchronizing CUDA operation" in str(r.message)]
    sites = Counter(f"{os.path.relpath(r.filename)}:{r.lineno}" for r in syncs)
    return len(syncs), [f"{site} ×{n}" for site, n in sites.most_common(top)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # deliberate: outside the window, so the clock reads finished work


class StepProbe:
    """Wraps a task's ``compute_losses``: times steps ``[first, last)`` and counts host syncs inside them.

    ``kill_at`` (1-based step): the process SIGKILLs itself when that step starts (before its forward).
    """

    def __init__(
        self, device: torch.device, first: int, last: int, *, count_syncs: bool, kill_at: int | None = None
    ) -> None:
        if not 1 <= first < last:
            raise ValueError(f"the probe window needs 1 <= first < last, got [{first}, {last})")
        self.device, self.first, self.last, self.kill_at = device, first, last, kill_at
        self.count_syncs = count_syncs and device.type == "cuda"
        self.calls = 0
        self.result = WindowResult()
        self._started = 0.0
        self._catcher: contextlib.AbstractContextManager[list[warnings.WarningMessage]] | None = None
        self._records: list[warnings.WarningMessage] = []

    def install(self, task: Any) -> None:
        """Shadow ``task.compute_losses`` on the instance with the probed version."""
        inner = task.compute_losses

        def compute_losses(model: Any, batch: Any) -> Any:
            self.on_step_start()
            return inner(model, batch)

        task.compute_losses = compute_losses

    def on_step_start(self) -> None:
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # mid-step, as a pre-empted node would die
        if self.calls == self.first:
            _synchronize(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            if self.count_syncs:
                self._catcher = warnings.catch_warnings(record=True)
                self._records = self._catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            self._started = time.perf_counter()
        elif self.calls == self.last:
            self.close()

    def close(self) -> None:
        """End the window (called at the start of step ``last``; a no-op when it is already closed)."""
        if self._started == 0.0 or self.result.steps:
            return
        if self.count_syncs:
            torch.cuda.set_sync_debug_mode("default")
        _synchronize(self.device)
        self.result.seconds = time.perf_counter() - self._started
        self.result.steps = self.calls - self.first
        if self._catcher is not None:
            self._catcher.__exit__(None, None, None)
            self.result.syncs, self.result.sync_sites = summarise_syncs(self._records)
        if self.device.type == "cuda":
            self.result.peak_memory_mib = torch.cuda.max_memory_allocated(self.device) / 2**20


# -- trainwell, probed ------------------------------------------------------------------------------
def trainwell_run(
    config: str, overrides: Sequence[str], probe_args: Mapping[str, Any], device: torch.device
) -> tuple[WindowResult, Any]:
    """One ``Trainer.fit()`` in this process with a probe on its task; returns the window and the FitResult."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as run_dir:
        cfg = load_config(config, [*overrides, f"run.dir={run_dir}"])
        task = build_task(cfg)
        probe = StepProbe(device, **probe_args)
        probe.install(task)
        result = Trainer(build_run(cfg, task)).fit()
        probe.close()
    return probe.result, result


# -- the hand-written loop ------------------------------------------------------------------------
def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)  # pinned source: an async copy
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str, min_lr_ratio: float) -> float:
    """Linear warmup, then linear / cosine / constant decay to ``min_lr_ratio`` (README's schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = {"linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)), "constant": 1.0}[decay]
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def hand_written_run(
    config: str, overrides: Sequence[str], device: torch.device, total_steps: int, window: tuple[int, int]
) -> WindowResult:
    """The loop a careful user writes for the same task, data, optimizer, schedule and precision.

    Pinned memory and ``non_blocking`` copies, fused AdamW/Adam on CUDA (no GradScaler sync), autocast,
    GradScaler for fp16, gradient clipping when configured. Same seeding as trainwell (seed → datasets →
    model → seed), its own shuffled order. Losses of every step are kept on the device and read once.
    """
    cfg = load_config(config, list(overrides))
    _seed(cfg.train.seed)
    task = build_task(cfg)
    task.run_dir = None
    train_set, _ = task.build_datasets()
    model = task.build_model().to(device)
    _seed(cfg.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    fused = {"fused": True} if device.type == "cuda" else {}
    if o.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
    else:
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        opt = cls(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps, **fused)
    s = cfg.schedule
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, s.warmup_steps, total_steps, s.decay, s.min_lr_ratio)
    )
    dtype = AMP_DTYPES[cfg.train.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    loader = DataLoader(
        train_set,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),
        collate_fn=task.collate_fn(),
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    probe = StepProbe(device, *window, count_syncs=False)
    clip = cfg.train.clip_grad_norm
    losses: list[torch.Tensor] = []
    model.train()
    step, epoch = 0, 0
    while step < total_steps:
        if hasattr(task, "on_epoch_start"):
            task.on_epoch_start(epoch)
        for batch in loader:
            if step == total_steps:
                break
            probe.on_step_start()
            batch = _to(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = task.compute_losses(model, batch)
            parts = out.losses if hasattr(out, "losses") else out
            total = torch.stack([v.float() for v in parts.values()]).sum()
            scaler.scale(total).backward()
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total.detach())
            step += 1
        epoch += 1
    probe.close()
    probe.result.losses = torch.stack(losses).tolist()  # the one host read of the losses
    return probe.result


# -- entry points ------------------------------------------------------------------------------------
def _steps_per_epoch(config: str, overrides: Sequence[str]) -> int:
    cfg = load_config(config, list(overrides))
    task = build_task(cfg)
    task.run_dir = None
    train_set, _ = task.build_datasets()
    return -(-len(train_set) // cfg.train.batch_size)  # type: ignore[arg-type]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Per precision: one sync-counted trainwell run, then ``repeats`` alternating (hand, trainwell) pairs."""
    device = torch.device(args.device)
    per_epoch = _steps_per_epoch(args.config, args.overrides)
    steps = max(3, min(args.steps, per_epoch))  # one epoch at most: no epoch end inside the window
    first = min(args.warmup, steps - 2) + 1
    window = (first, steps)
    run_keys = [
        f"train.max_steps={steps}",
        "train.epochs=1",
        f"train.log_every={10 * steps}",
        "train.grad_accum_steps=1",
    ]
    run_keys += ["train.progress_bar=off", "eval.every_epochs=0", "checkpoint.every_epochs=0", f"train.device={device}"]
    out: dict[str, Any] = {"steps": steps, "window": list(window), "steps_per_epoch": per_epoch, "amp": {}}
    for amp in args.amp:
        keys = [*args.overrides, *run_keys, f"train.amp={amp}"]
        probe_args = {"first": first, "last": steps, "count_syncs": True}
        checked, _ = trainwell_run(args.config, keys, probe_args, device)
        pairs = []
        for _ in range(args.repeats):  # back to back, so drift of the machine hits both sides alike
            hand = hand_written_run(args.config, keys, device, steps, window)
            engine, _ = trainwell_run(args.config, keys, {**probe_args, "count_syncs": False}, device)
            pairs.append((hand.steps_per_s, engine.steps_per_s))
        out["amp"][amp] = {
            "sync_check": asdict(checked),
            "steps_per_s": statistics.median(e for _, e in pairs),
            "hand_steps_per_s": statistics.median(h for h, _ in pairs),
            "ratio": statistics.median(e / h for h, e in pairs),
            "pairs": pairs,
            "peak_memory_mib": checked.peak_memory_mib,
        }
    return out


def killed(args: argparse.Namespace) -> None:
    """Train through the CLI's path (``Trainer.fit``) and SIGKILL this process when step ``kill_at`` starts."""
    cfg = load_config(args.config, list(args.overrides))
    kill_at = args.kill_at
    task = build_task(cfg)
    trainer = Trainer(build_run(cfg, task))
    if kill_at == "auto":  # one and a half epochs: mid-epoch, after an epoch boundary was crossed
        per_epoch = getattr(trainer, "batches_per_epoch", None) or _steps_per_epoch(args.config, args.overrides)
        kill_at = per_epoch + max(1, per_epoch // 2)
    probe = StepProbe(torch.device("cpu"), 1, 2, count_syncs=False, kill_at=int(kill_at))
    probe.install(task)
    print(f"gpu_check: this run SIGKILLs itself at step {kill_at}", flush=True)
    trainer.fit()
    raise SystemExit(f"the run finished before step {kill_at}: nothing was killed")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="sync-counted run and speed pairs, JSON to --out")
    m.add_argument("config")
    m.add_argument("overrides", nargs="*")
    m.add_argument("--device", default="cuda")
    m.add_argument("--amp", nargs="+", default=["bf16", "fp16"], choices=list(AMP_DTYPES))
    m.add_argument("--steps", type=int, default=60)
    m.add_argument("--warmup", type=int, default=5, help="steps before the window opens (data report, compile)")
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--out", required=True)
    k = sub.add_parser("killed", help="a run that SIGKILLs itself mid-epoch")
    k.add_argument("config")
    k.add_argument("overrides", nargs="*")
    k.add_argument("--kill-at", default="auto", help="step (1-based) at whose start the process dies, or 'auto'")
    args = parser.parse_args(argv)
    if args.command == "measure":
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(measure(args), f, indent=2)
    else:
        killed(args)


if __name__ == "__main__":
    main()
