"""PyTorch threads on a shared machine: steps/s of the same training with ``train.num_threads`` = all cores (the
default on one process) and = 1, alone and beside another busy process (a Python busy loop per core but one).

Why it matters: PyTorch's intra-op threads synchronise at every op; when one of them loses its core to another
process, every op waits for it. On a small shared machine that made steps ~10× slower in the ports.

    python benchmarks/threads.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import SIZES, BenchTask, make_data

from trainwell.api import build_run
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer
from trainwell.engine.runtime import available_cores


def _burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def steps_per_s(threads: int, steps: int) -> float:
    import logging

    size = SIZES["wide"]
    data = make_data(size, steps)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = ExperimentConfig()
        cfg.train.epochs, cfg.train.batch_size, cfg.train.progress_bar = 1, size.batch, "off"
        cfg.train.num_threads, cfg.eval.every_epochs, cfg.run.dir = threads, 0, run_dir
        trainer = Trainer(build_run(cfg, BenchTask(size, data, make_data(size, 1)), env=DistEnv()))
        logging.getLogger("trainwell").setLevel(logging.WARNING)
        started = time.perf_counter()
        trainer.fit()
        return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = available_cores()
    print(f"{cores} cores; MLP {'→'.join(map(str, SIZES['wide'].widths))}, batch {SIZES['wide'].batch}")
    for busy in (False, True):
        burners: list[mp.Process] = []
        if busy:
            stop_at = time.time() + 3600
            burners = [mp.Process(target=_burn, args=(stop_at,), daemon=True) for _ in range(max(1, cores - 1))]
            for p in burners:
                p.start()
        try:
            results: dict[int, list[float]] = {cores: [], 1: []}
            for _ in range(args.repeats):  # alternate the two settings
                for threads in (cores, 1):
                    results[threads].append(steps_per_s(threads, args.steps))
        finally:
            for p in burners:
                p.terminate()
        label = f"beside {len(burners)} busy process(es)" if busy else "alone"
        ratio = statistics.median(a / b for a, b in zip(results[1], results[cores], strict=True))
        print(
            f"{label:>26}: num_threads={cores}: {statistics.median(results[cores]):7.1f} steps/s; "
            f"num_threads=1: {statistics.median(results[1]):7.1f} steps/s (1 thread / {cores} = {ratio:.2f}×)"
        )
    print(f"(pid {os.getpid()}; other load on the machine affects both settings alike: they alternate)")


if __name__ == "__main__":
    main()
