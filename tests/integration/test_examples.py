"""The two port examples run as a user runs them (``PYTHONPATH=. trainwell train config.yaml``) and learn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_doctor_quiet import assert_doctor_quiet

from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def _run(example: str, run_dir: Path, *overrides: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / example), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "trainwell",
        "train",
        "config.yaml",
        f"run.dir={run_dir}",
        "train.progress_bar=off",
    ]
    done = subprocess.run(
        [*command, *overrides], cwd=ROOT / "examples" / example, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_metrics(run_dir / "metrics.jsonl")


@pytest.mark.slow
def test_viecap_style_example(tmp_path: Path) -> None:
    records = _run("viecap_style", tmp_path, "train.amp=off")  # bf16 is emulated (slow) on most CPUs
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert train[-1]["loss/token_ce"] < train[0]["loss/token_ce"]
    assert val[-1]["token_f1"] > val[0]["token_f1"]
    assert [r["step"] for r in train][:3] == [3, 6, 9]  # ⅕ epoch of 16 steps = every 3 steps in the epoch
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert {"epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt", "epoch_0004.pt", "last.pt", "best.pt"} == set(names)
    assert_doctor_quiet(tmp_path)


@pytest.mark.slow
def test_openpcdet_style_example(tmp_path: Path) -> None:
    records = _run("openpcdet_style", tmp_path, "data.train_size=128", "train.epochs=3")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert {"loss/loss_loc", "loss/loss_z", "num_points", "loc_err"} <= set(train[0])
    assert val[-1]["center_error_m"] < val[0]["center_error_m"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_0002.pt", "epoch_0003.pt", "last.pt"]  # max_ckpt_save_num = 2
    assert train[-1]["lr"] < train[0]["lr"] or train[0]["lr"] < 3e-3  # OneCycle: starts low, ends low
    assert_doctor_quiet(tmp_path)
