"""docs/porting.md's worked example: a hand-written loop (examples/porting_walkthrough/handwritten_train.py) and its
port (blobs_task.py + config.yaml) run as a user runs them, learn the same problem equally well, and the port's
predict and best.pt work; a config without eval.best_metric is warned at the start."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "porting_walkthrough"


def _trainwell(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (".", os.environ.get("PYTHONPATH", "")) if p)  # the example's module first
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "trainwell", *args]
    return subprocess.run(command, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_port_learns_what_the_handwritten_loop_learns(tmp_path: Path) -> None:
    handwritten = runpy.run_path(str(EXAMPLE / "handwritten_train.py"))["main"](str(tmp_path / "hand_best.pt"))
    run = tmp_path / "run"
    done = _trainwell("train", "config.yaml", f"run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eval.best_metric is not set" not in done.stdout + done.stderr
    val = read_metrics(run / "metrics.jsonl")
    best = max(r["accuracy"] for r in val if r["kind"] == "val")
    assert handwritten > 0.9 and best > 0.9 and abs(best - handwritten) < 0.05, (handwritten, best)
    # predict: points at the three blob centres come back as their classes.
    points = tmp_path / "points.json"
    points.write_text(json.dumps([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]]))
    best_pt = str(run / "checkpoints" / "best.pt")
    done = _trainwell("predict", "config.yaml", "--checkpoint", best_pt, "--input", str(points))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [0, 1, 2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[1.0, 2.0, 3.0]]))
    done = _trainwell("predict", "config.yaml", "--checkpoint", best_pt, "--input", str(bad))
    assert done.returncode == 1 and str(bad) in done.stderr and "Traceback" not in done.stderr


def test_a_run_without_best_metric_is_warned_at_the_start(tmp_path: Path) -> None:
    done = _trainwell("train", "config.yaml", f"run.dir={tmp_path}", "eval.best_metric=null", "train.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    assert "eval.best_metric is not set, so this run writes no best.pt" in log and "one of accuracy" in log
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
