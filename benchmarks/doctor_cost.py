"""What the live doctor costs per log line, and whether that cost grows with the run's length.

A run that logs every step (``train.log_every=1``, as OpenPCDet's loop writes TensorBoard every iteration) gives the
doctor one record per step; its history checks read the whole history, on a schedule that keeps the cost per line
bounded only if each pass is linear in the records. The job has (almost) no compute — a 2→1 linear model, batch 1 —
so what is measured is the engine: the same run with ``diagnostics.enabled`` true and false, alternated, medians.

    python benchmarks/doctor_cost.py [--steps 2000 8000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch
from overhead import BenchTask, Size
from torch import nn
from torch.utils.data import TensorDataset

from trainwell.api import build_run
from trainwell.config.schema import ExperimentConfig, ScheduleConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer

SIZE = Size((2, 1), 1)


class _LinearTask(BenchTask):
    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(2, 1)


def run_us_per_step(steps: int, *, doctor: bool) -> float:
    """Wall time of ``Trainer.fit`` per step, logging every step."""
    x = torch.randn(steps, 2, generator=torch.Generator().manual_seed(0))
    data, val = TensorDataset(x, x[:, :1]), TensorDataset(torch.randn(4, 2), torch.randn(4, 1))
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = ExperimentConfig()
        cfg.train.epochs, cfg.train.batch_size, cfg.train.progress_bar, cfg.train.log_every = 1, 1, "off", 1
        cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay = "sgd", 1e-2, 0.0, 0.0
        cfg.schedule = ScheduleConfig(warmup_steps=0, decay="constant")
        cfg.eval.every_epochs, cfg.eval.batch_size = 0, 4
        cfg.diagnostics.enabled = doctor
        cfg.run.dir = run_dir
        trainer = Trainer(build_run(cfg, _LinearTask(SIZE, data, val), env=DistEnv()))
        logging.getLogger("trainwell").setLevel(logging.ERROR)  # keep the benchmark's output readable
        started = time.perf_counter()
        trainer.fit()
        return (time.perf_counter() - started) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; train.log_every=1, a 2→1 linear model")
    run_us_per_step(200, doctor=True)  # warm-up
    for steps in args.steps:
        on: list[float] = []
        off: list[float] = []
        for _ in range(args.repeats):
            on.append(run_us_per_step(steps, doctor=True))
            off.append(run_us_per_step(steps, doctor=False))
        cost = statistics.median(a - b for a, b in zip(on, off, strict=True))
        print(
            f"  {steps:6d} steps: doctor on {statistics.median(on):7.0f} µs/step, off {statistics.median(off):7.0f} "
            f"µs/step → the doctor costs {cost:.0f} µs per log line"
        )


if __name__ == "__main__":
    main()
