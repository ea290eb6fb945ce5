"""A detection run stopped by SIGTERM mid-epoch (augmentation, OneCycle) resumes bitwise equal to an uninterrupted one.

The stopped run is a real ``trainwell train`` subprocess that gets SIGTERM once its log shows step 4 (of 3 steps per
epoch: inside epoch 2); whichever step it stops at, its resumption must end with the reference's weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainwell.cli import main
from trainwell.engine.checkpoint import LAST, load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "detection3d" / "tiny.yaml")
SMALL = [
    "data.train_size=12",
    "data.val_size=4",
    "train.epochs=3",
    "train.log_every=1",
    "data.augment.disable_from_epoch=2",
    "eval.every_epochs=3",
    "checkpoint.every_epochs=3",
    "diagnostics.enabled=false",
]


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_bitwise(tmp_path: Path) -> None:
    assert main(["train", TINY, *SMALL, f"run.dir={tmp_path / 'reference'}"]) == 0
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "trainwell", "train", TINY, *SMALL, f"run.dir={run_dir}"]
    with open(tmp_path / "run.out", "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        log = run_dir / "train.log"
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and " step 4 " in log.read_text():
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
        code = proc.wait(timeout=120)
    assert code == 143, (tmp_path / "run.out").read_text()[-2000:]
    stopped = load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]
    assert 4 <= stopped["global_step"] < 9
    assert main(["train", TINY, *SMALL, f"run.dir={run_dir}", "--resume", "auto"]) == 0
    got = load_checkpoint(run_dir / "checkpoints" / LAST)
    want = load_checkpoint(tmp_path / "reference" / "checkpoints" / LAST)
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
