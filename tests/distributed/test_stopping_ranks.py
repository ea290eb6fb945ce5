"""``train.max_time`` on 2 gloo processes whose clocks disagree: rank 0's clock decides, on logging steps, so both
processes stop at the same step (each on its own clock they would stop apart and the first collective would hang)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main

CONFIG = str(REPO / "configs/examples/regression.yaml")


def _train_with_skewed_clock(rank: int, world_size: int, run_dir: Path) -> None:
    """Every optimizer step takes 10 s on rank 0's clock and 30 s on rank 1's."""
    from trainwell.engine import loop, stopping

    clock = {"now": 1000.0}
    real_step = loop.optimizer_step

    def timed_step(**kwargs: object) -> None:
        clock["now"] += 10.0 * (1 + 2 * rank)
        real_step(**kwargs)

    loop.optimizer_step = timed_step
    stopping.time = types.SimpleNamespace(monotonic=lambda: clock["now"])  # type: ignore[assignment]
    args = ["train.max_steps=20", "train.log_every=2", "train.max_time=95s", "task.dropout=0", "train.device=cpu"]
    args.append("distributed.timeout_s=60")  # a disagreement would hang in a collective: fail within a minute
    assert main(["train", CONFIG, f"run.dir={run_dir}", "train.batch_size=16", *args]) == 0


def test_rank_0_clock_stops_every_process_at_one_logging_step(tmp_path: Path) -> None:
    spawn(_train_with_skewed_clock, 2, tmp_path, init_group=False)
    status = json.loads((tmp_path / "status.json").read_text())
    # Rank 0, checking every 2 steps (the logging interval) two steps ahead: 10·k + 2·10 ≥ 95 first at k = 8.
    assert (status["state"], status["step"]) == ("time_budget", 8)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert saved["global_step"] == 8 and saved["elapsed_s"] == 80.0
