"""An elastic torchrun job (c10d rendezvous, ``--max-restarts=1``) whose rank 1 dies mid-epoch: torchrun restarts the
group, the restarted workers continue from the newest valid checkpoint by themselves (no ``--resume`` on the
command line), and the run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from distributed_helpers import PYTHON_BIN, REPO, free_port, subprocess_env

from trainwell.cli import main

pytestmark = pytest.mark.slow  # two torchrun attempts (~15 s on two cores)

CONFIG = str(REPO / "configs/examples/regression.yaml")
COMMON = [
    "train.epochs=1",
    "train.max_steps=10",
    "train.log_every=2",
    "task.dropout=0",
    "train.device=cpu",
    "checkpoint.latest_every=2",  # last.pt every 2 steps: the failure at step 7 loses one step
]


def test_a_killed_worker_is_restarted_and_the_run_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "elastic"
    command = [
        str(PYTHON_BIN / "torchrun"),
        "--nnodes=1",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "-m",
        "trainwell",
        "train",
        CONFIG,
        f"run.dir={run_dir}",
        "train.batch_size=16",
        "task.class_path=distributed_helpers:FailingTask",
        "task.fail_at_batch=7",
        "task.fail_first_attempt_only=true",
        *COMMON,
    ]
    # pytorch#135712: a restarted c10d group on gloo can reuse the dead group's store and hang.
    env = {**subprocess_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    job = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "injected failure on rank 1" in job.stderr  # the first attempt did fail
    log = (run_dir / "train.log").read_text()
    assert "Resumed from" in log and "step 6" in log

    reference = tmp_path / "reference"
    assert main(["train", CONFIG, f"run.dir={reference}", "train.batch_size=32", *COMMON]) == 0
    got = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    expected = torch.load(reference / "checkpoints/last.pt", weights_only=True)
    assert got["train_state"]["global_step"] == expected["train_state"]["global_step"] == 10
    for name, weight in expected["model"].items():
        # Reduction order only (2 processes against 1).
        torch.testing.assert_close(got["model"][name], weight, rtol=0, atol=1e-6, msg=name)
    records = list(map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()))
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8, 10]  # each logged step once
