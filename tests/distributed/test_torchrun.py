"""Real ``torchrun --nproc_per_node=2 -m trainwell …`` jobs: train + eval end to end, and failing ranks.

A failing rank must end the whole job with a non-zero status: an exception on one rank (torchrun stops
the others), and a rank that hangs (the others' collectives time out after ``distributed.timeout_s``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from distributed_helpers import REPO, subprocess_env, torchrun_command

from trainwell.cli import main

HAND_POSE_TINY = REPO / "configs/hand_pose/tiny.yaml"
# The hand-pose tiny config when it exists; the regression example otherwise.
if HAND_POSE_TINY.is_file():
    CONFIG, TRAIN_OVERRIDES = str(HAND_POSE_TINY), ["train.device=cpu"]
else:
    CONFIG, TRAIN_OVERRIDES = str(REPO / "configs/examples/regression.yaml"), ["train.epochs=2"]
REGRESSION = str(REPO / "configs/examples/regression.yaml")


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        torchrun_command(2, *args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def test_train_and_eval_on_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train = _torchrun("train", CONFIG, f"run.dir={run_dir}", *TRAIN_OVERRIDES)
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.count("trainwell run '") == 1  # rank 1 prints no banner
    log = (run_dir / "train.log").read_text()
    assert "2 process(es)" in log and "= global batch " in log
    assert "samples from all 2 processes" in log

    checkpoint = str(run_dir / "checkpoints" / "last.pt")
    two_json, one_json = tmp_path / "eval2.json", tmp_path / "eval1.json"
    ev = _torchrun("eval", CONFIG, "--checkpoint", checkpoint, "--out", str(two_json), "train.device=cpu")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert ev.stdout.count("Evaluated on ") == 1
    assert main(["eval", CONFIG, "--checkpoint", checkpoint, "--out", str(one_json), "train.device=cpu"]) == 0

    two, one = json.loads(two_json.read_text()), json.loads(one_json.read_text())
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["num_samples"] == one["num_samples"] > 0
    assert f"Evaluated on {two['num_samples']} samples from all 2 processes" in ev.stdout
    assert two["metrics"].keys() == one["metrics"].keys()
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-6), name


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_a_failing_rank_ends_the_job(tmp_path: Path, mode: str) -> None:
    timeout_s = 3
    started = time.perf_counter()
    job = _torchrun(
        "train",
        REGRESSION,
        f"run.dir={tmp_path}",
        "task.class_path=distributed_helpers:FailingTask",
        f"task.fail_mode={mode}",
        f"distributed.timeout_s={timeout_s}",
        timeout=90,
    )
    elapsed = time.perf_counter() - started
    assert job.returncode != 0
    if mode == "raise":
        assert "injected failure on rank 1" in job.stderr
    else:  # rank 0 waits in DDP's gradient all-reduce until the timeout
        assert "Timed out" in job.stderr or "timeout" in job.stderr.lower()
        assert elapsed > timeout_s
    assert elapsed < 45, f"the job took {elapsed:.0f} s to end"
