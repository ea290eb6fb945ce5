"""Cost of a durable, checksummed ``last.pt`` against a plain ``torch.save``, for two model sizes.

For each size a real :class:`~trainwell.engine.loop.Trainer` (the regression task's MLP, widened) takes one
AdamW step, so the checkpoint holds the model plus the optimizer's two moment buffers, as in a run. Then,
alternating (A, B, A, B, …) and reporting medians:

* ``torch.save``  — ``torch.save(trainer.run.run_state.state_dict(), path)``: no checksum, no fsync, no rename;
* ``last.pt``     — ``trainer.run.checkpoints.save(trainer.run.run_state.state_dict())``: sha256 of the content,
  temp file, flush + fsync, atomic rename, fsync of the directory (what the loop does);
* ``load``        — ``load_checkpoint`` (weights-only load + checksum verification) against ``torch.load``.

    python benchmarks/checkpoint_save.py [--repeats 5] [--dir DIR]

Write to the filesystem the runs use: fsync costs nothing on tmpfs and a lot on some network mounts.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainwell.api import build_run
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.engine.checkpoint.files import content_digest
from trainwell.engine.loop import Trainer
from trainwell.experiment import build_task, load_config

CONFIG = "configs/examples/regression.yaml"
SIZES = {
    # hidden width → parameters of Linear(64, h) + Linear(h, h) + Linear(h, 16)
    "hand-pose-sized MLP (~2 M params)": 1350,
    "100 MB model (25 M fp32 params)": 4950,
}


def build_trainer(hidden: int, run_dir: Path) -> Trainer:
    overrides = [
        f"run.dir={run_dir}",
        f"task.hidden={hidden}",
        "data.in_features=64",
        "data.out_features=16",
        "data.train_size=8",
        "data.val_size=8",
        "train.batch_size=8",
        "train.max_steps=1",
        "train.progress_bar=off",
        "eval.best_metric=null",
        "checkpoint.every_epochs=0",
    ]
    cfg = load_config(CONFIG, overrides)
    trainer = Trainer(build_run(cfg, build_task(cfg)))
    trainer.fit()  # one step: AdamW's moment buffers exist, as in a real checkpoint
    return trainer


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: the system's temp directory)")
    args = parser.parse_args()
    logging.getLogger("trainwell").disabled = True

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, writing to {root.resolve()}")
        for label, hidden in SIZES.items():
            trainer = build_trainer(hidden, root / f"h{hidden}")
            assert trainer.run.checkpoints is not None
            plain = root / f"plain-{hidden}.pt"
            params = sum(p.numel() for p in trainer.run.model.parameters())

            def save_plain(trainer: Trainer = trainer, plain: Path = plain) -> None:
                torch.save(trainer.run.run_state.state_dict(), plain)

            def save_last(trainer: Trainer = trainer) -> None:
                assert trainer.run.checkpoints is not None
                trainer.run.checkpoints.save(trainer.run.run_state.state_dict())

            save_plain(), save_last()  # warm-up (page cache, allocator)
            plain_s, last_s = [], []
            for _ in range(args.repeats):
                plain_s.append(median_seconds(save_plain, 1))
                last_s.append(median_seconds(save_last, 1))
            last_path = trainer.run.checkpoints.directory / "last.pt"
            size_mb = last_path.stat().st_size / 1e6
            digest_s = median_seconds(
                lambda trainer=trainer: content_digest(trainer.run.run_state.state_dict()), args.repeats
            )
            load_plain = median_seconds(lambda p=plain: torch.load(p, weights_only=True), args.repeats)
            load_verified = median_seconds(lambda p=last_path: load_checkpoint(p), args.repeats)

            t_plain, t_last = statistics.median(plain_s), statistics.median(last_s)
            print(f"\n{label}: {params / 1e6:.2f} M params, last.pt {size_mb:.1f} MB (model + AdamW state)")
            print(f"  torch.save (no checksum, no fsync)   {t_plain * 1e3:8.1f} ms")
            print(
                f"  last.pt (sha256 + fsync + rename)    {t_last * 1e3:8.1f} ms   "
                f"= {t_last / t_plain:.2f}× torch.save, {size_mb / t_last:.0f} MB/s"
            )
            print(f"    of which sha256 of the content     {digest_s * 1e3:8.1f} ms")
            print(
                f"  load: verified {load_verified * 1e3:.1f} ms vs torch.load {load_plain * 1e3:.1f} ms "
                f"= {load_verified / load_plain:.2f}×"
            )


if __name__ == "__main__":
    main()
