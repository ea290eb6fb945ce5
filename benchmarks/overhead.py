"""Engine overhead: trainwell vs a hand-written minimal PyTorch loop, same model and data, one process.

Both loops train the regression task's MLP on the same in-memory dataset with AdamW, a LambdaLR
warmup+cosine schedule and the same batch size. trainwell runs with its default logging (console +
train.log + metrics.jsonl + TensorBoard every ``train.log_every`` steps) and writes ``last.pt`` at the
end of the epoch, as a user run does. Runs alternate (A, B, A, B, …) and the median of each side is
reported, so drift of the machine affects both alike.

    python benchmarks/overhead.py [--steps 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainwell.config.loader import load_config
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer, build_task
from trainwell.engine.schedule import build_scheduler


def _overrides(steps: int, batch: int) -> list[str]:
    return [
        f"data.train_size={steps * batch}",
        "data.val_size=64",
        "data.in_features=64",
        "data.out_features=16",
        "task.hidden=256",
        "task.loss_weights={mse: 1.0, l1: 0.0}",
        "train.epochs=1",
        f"train.batch_size={batch}",
        "train.clip_grad_norm=null",
        "train.log_every=50",
        "train.progress_bar=off",
        "schedule.warmup_steps=50",
        "eval.every_epochs=0",
    ]


def hand_written(steps: int, batch: int) -> float:
    """The loop people write by hand; returns steps per second."""
    cfg = load_config("configs/examples/regression.yaml", _overrides(steps, batch))
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    train_set, _ = task.build_datasets()
    loader = DataLoader(train_set, batch_size=batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = build_scheduler(opt, warmup_steps=50, total_steps=steps, decay="cosine", min_lr_ratio=0.1)
    loss_fn = nn.MSELoss()
    model.train()
    started = time.perf_counter()
    done = 0
    for batch_data in loader:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch_data["x"]), batch_data["y"])
        loss.backward()
        opt.step()
        sched.step()
        done += 1
    return done / (time.perf_counter() - started)


def with_trainwell(steps: int, batch: int) -> float:
    """The same training through ``Trainer.fit`` with default logging; returns steps per second."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config("configs/examples/regression.yaml", [*_overrides(steps, batch), f"run.dir={run_dir}"])
        trainer = Trainer(cfg, build_task(cfg), env=DistEnv())
        logging.getLogger("trainwell").setLevel(logging.WARNING)  # keep the benchmark's output readable
        started = time.perf_counter()
        result = trainer.fit()
        elapsed = time.perf_counter() - started
    return result.state.global_step / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hand_written(200, args.batch)  # warm-up: allocator, kernels, imports
    with_trainwell(200, args.batch)
    hand, engine = [], []
    for _ in range(args.repeats):
        hand.append(hand_written(args.steps, args.batch))
        engine.append(with_trainwell(args.steps, args.batch))
    hand_rate, engine_rate = statistics.median(hand), statistics.median(engine)
    # Each pair ran back to back: the median of the pairwise ratios is robust to the machine's speed drifting.
    paired = statistics.median(e / h for e, h in zip(engine, hand, strict=True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps × batch {args.batch}")
    print(f"hand-written loop: {hand_rate:8.1f} steps/s  (runs: {', '.join(f'{r:.0f}' for r in hand)})")
    print(f"trainwell:         {engine_rate:8.1f} steps/s  (runs: {', '.join(f'{r:.0f}' for r in engine)})")
    print(f"trainwell / hand-written = {paired:.3f} (median of back-to-back pairs; overhead {1 - paired:+.1%})")


if __name__ == "__main__":
    main()
