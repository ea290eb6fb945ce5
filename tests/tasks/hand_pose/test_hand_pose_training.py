"""End to end through the CLI: the tiny hand-pose config trains, and its val MPJPE at least halves."""

import subprocess
import sys
from pathlib import Path

import pytest

from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_tiny_config_trains_and_val_mpjpe_halves(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trainwell", "train", "configs/hand_pose/tiny.yaml", f"run.dir={run_dir}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    records = read_metrics(run_dir / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["epoch"] for r in val] == list(range(1, 17))
    assert all({"mpjpe", "pa_mpjpe"} <= set(r) for r in val)
    # Every configured loss component is logged by name, and their sum is the loss.
    for record in train:
        parts = [record[f"loss/{name}"] for name in ("joint_3d", "keypoint_2d", "bone_prior", "pose_prior", "aux")]
        assert record["loss"] == pytest.approx(sum(parts), rel=1e-6)
    first, last = val[0]["mpjpe"], val[-1]["mpjpe"]
    assert last <= 0.5 * first, f"val MPJPE went from {first:.1f} to {last:.1f} mm"
    assert val[-1]["pa_mpjpe"] < val[-1]["mpjpe"]
    assert (run_dir / "checkpoints" / "best.pt").is_file()
