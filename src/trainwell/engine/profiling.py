"""``train.profile``: ``torch.profiler`` over a few optimizer steps, written into the run directory.

The loop calls :meth:`StepProfiler.step` after every optimizer step; outside the profiled window that is one
integer comparison. Rank 0 profiles (the other processes run the same steps).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch

from trainwell.config.training import ProfileConfig

PROFILE_DIR = "profile"
TOP_OPERATORS = 15


class StepProfiler:
    """Profiles optimizer steps ``wait + 1 … wait + warmup + active`` of this process and reports them once.

    Args:
        cfg: the ``train.profile`` section (``None``: a profiler that does nothing).
        run_dir: where ``profile/`` goes (``None``: the traces are not written, the table is still logged).
        device: the training device (CUDA activity is recorded on a GPU).
        log: the run's logger (the top operators go there).
    """

    def __init__(self, cfg: ProfileConfig | None, run_dir: Path | None, device: torch.device, log: logging.Logger):
        self.cfg = cfg
        self.log = log
        self.out_dir = run_dir / PROFILE_DIR if run_dir is not None else None
        self.steps = 0
        self.total = cfg.wait + cfg.warmup + cfg.active if cfg is not None else 0
        self._profiler: Any = None
        if cfg is None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=cfg.wait, warmup=cfg.warmup, active=cfg.active, repeat=1),
            record_shapes=True,
        )
        self._profiler.start()

    def __enter__(self) -> StepProfiler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()  # on every exit path: a run that ends inside the window still reports what it recorded

    def step(self) -> None:
        """After an optimizer step: advance the profiler's schedule; report when the window is complete."""
        if self._profiler is None:
            return
        self.steps += 1
        self._profiler.step()
        if self.steps >= self.total:
            self.finish()

    def finish(self) -> None:
        """Stop (also when the run ends before the window does) and log the top operators by self time."""
        if self._profiler is None:
            return
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        if self.steps < self.total:
            self.log.info(
                f"profile: the run ended after {self.steps} of the {self.total} steps train.profile asked for"
            )
        try:
            averages = profiler.key_averages()
        except (AssertionError, RuntimeError):  # nothing was recorded (the run ended inside wait/warmup)
            return
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            chrome = self.out_dir / "trace.json"
            profiler.export_chrome_trace(str(chrome))
            # The same trace under the name TensorBoard's profiler plugin looks for (<worker>.pt.trace.json).
            shutil.copyfile(chrome, self.out_dir / f"{socket.gethostname()}_{os.getpid()}.pt.trace.json")
        sort_by = "self_cuda_time_total" if any(e.self_device_time_total for e in averages) else "self_cpu_time_total"
        table = averages.table(sort_by=sort_by, row_limit=TOP_OPERATORS)
        where = f" (traces in {self.out_dir})" if self.out_dir is not None else ""
        self.log.info(f"profile: top {TOP_OPERATORS} operators of {self.cfg.active} steps by self time{where}:")  # type: ignore[union-attr]
        for line in table.splitlines():
            self.log.info(line)
