"""End to end through the CLI: the tiny RGB-D config trains through the engine and its loss falls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]
PARTS = ("keypoint_2d", "joint_3d", "vertex", "shape_prior", "pose_prior", "aux", "heatmap", "root")


@pytest.mark.slow
def test_tiny_rgbd_config_trains_and_the_loss_falls(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trainwell", "train", "configs/hand_pose/rgbd_tiny.yaml", f"run.dir={run_dir}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    for record in train:  # every UTNet part logged by name; their sum is the loss
        assert record["loss"] == pytest.approx(sum(record[f"loss/{name}"] for name in PARTS), rel=1e-5)
    first, last = train[0]["loss"], min(r["loss"] for r in train[-3:])
    assert last < 0.95 * first, f"loss went from {first:.1f} to {last:.1f}"
    assert all({"mpjpe", "pa_mpjpe", "mpvpe", "pa_mpvpe"} <= set(r) for r in val)
    assert 0 < val[-1]["pa_mpjpe"] < val[-1]["mpjpe"] < 1000
    best = run_dir / "checkpoints" / "best.pt"
    assert best.is_file()

    # `trainwell eval --export` on best.pt reproduces the best validation and writes both benchmark files.
    export = tmp_path / "export"
    command = [sys.executable, "-m", "trainwell", "eval", "configs/hand_pose/rgbd_tiny.yaml", "--checkpoint", str(best)]
    done = subprocess.run([*command, "--export", str(export)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = {line.split(":")[0]: line.split(":")[1].split()[0] for line in done.stdout.splitlines() if ": " in line}
    best_val = min(val, key=lambda r: (r["mpjpe"] + r["pa_mpjpe"]) / 2)
    assert float(printed["mpjpe"]) == pytest.approx(best_val["mpjpe"], rel=1e-4)
    for name in ("freihand", "ho3d"):
        pred = json.loads((export / name / "pred.json").read_text())
        assert len(pred) == 2 and len(pred[0]) == 64 and len(pred[0][0]) == 21
    for name in ("freihand/pa_mpjpe_mm", "ho3d/sc_tr_mpjpe_mm", "root_error", "mpjpe_cam"):  # logged == re-evaluated
        assert float(printed[name]) == pytest.approx(best_val[name], rel=1e-4), name

    # `trainwell predict` on FreiHAND's evaluation split (RGB only): one clear error, exit 2, no traceback.
    freihand = tmp_path / "freihand"
    freihand.mkdir()
    (freihand / "evaluation_K.json").write_text(json.dumps([[[480.0, 0, 112], [0, 480.0, 112], [0, 0, 1]]]))
    command = [sys.executable, "-m", "trainwell", "predict", "configs/hand_pose/rgbd_tiny.yaml", "--checkpoint"]
    done = subprocess.run(
        [*command, str(best), "--input", str(freihand), "--out", str(tmp_path / "p")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "no depth" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
