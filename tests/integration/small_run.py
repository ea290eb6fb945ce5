"""The small regression run shared by the resume and signal tests (imported by their modules)."""

from __future__ import annotations

from pathlib import Path

from trainwell.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/examples/regression.yaml")
# 96 samples / batch 8 = 12 micro-batches = 6 optimizer steps per epoch (accumulation 2), 18 steps in all.
# Dropout makes the result depend on the RNG streams. last.pt is written every 4 steps and at epoch ends,
# log records every 2 steps: a run killed after step 10 has logged a step that its resumption repeats.
SMALL = [
    "data.train_size=96",
    "data.val_size=32",
    "train.batch_size=8",
    "train.grad_accum_steps=2",
    "train.epochs=3",
    "task.hidden=16",
    "task.dropout=0.2",
    "checkpoint.latest_every_steps=4",
    "checkpoint.keep=2",
    "train.log_every=2",
    "train.progress_bar=off",
]


def train(run_dir: Path, *extra: str) -> int:
    """``trainwell train`` of the small run, in this process; returns the exit status."""
    return main(["train", CONFIG, *SMALL, f"run.dir={run_dir}", *extra])
