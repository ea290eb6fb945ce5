"""The doctor is silent on healthy runs: every shipped tiny config trains to the end with no ERROR or WARNING finding,
and ``trainwell doctor RUN_DIR`` agrees (exit 0). The planted-fault suite (tests/integration/test_planted_faults.py)
checks the other side: the same checks still find their faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwell.cli import main
from trainwell.doctor.findings import read_findings

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "configs/examples/regression.yaml",
    "configs/hand_pose/tiny.yaml",
    "configs/hand_pose/rgbd_tiny.yaml",
    # 7 epochs: with 3 to 5 its 2-layer GPT-2 ends with a quarter of the captions empty or one template caption for
    # most images, which the doctor rightly warns about (true findings, not false alarms).
    "configs/captioning/tiny.yaml",
    "configs/detection3d/tiny.yaml",
]


# What each pack's evaluation leaves in <run>/predictions (its evaluator's save_outputs; regression has none).
PREDICTIONS = {
    "configs/hand_pose/tiny.yaml": ["joints_rel_mm.json"],
    "configs/hand_pose/rgbd_tiny.yaml": ["freihand/pred.json", "ho3d/pred.json"],
    "configs/captioning/tiny.yaml": ["captions.json"],
    "configs/detection3d/tiny.yaml": ["result.txt"],
}


def assert_doctor_quiet(run_dir: Path) -> None:
    """No ERROR or WARNING finding left in the run's records, and ``trainwell doctor`` exits 0."""
    loud = {f.id: f.evidence for f in read_findings(run_dir / "findings.jsonl").values() if f.severity != "info"}
    assert loud == {}, loud
    assert main(["doctor", str(run_dir)]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("config", TINY)
def test_a_shipped_tiny_config_ends_without_findings(config: str, tmp_path: Path) -> None:
    assert main(["train", str(ROOT / config), f"run.dir={tmp_path}", "train.progress_bar=off"]) == 0
    assert_doctor_quiet(tmp_path)
    for name in PREDICTIONS.get(config, []):
        assert (tmp_path / "predictions" / name).stat().st_size > 0, name


@pytest.mark.slow
def test_detection_logged_every_step_is_not_called_stalled(tmp_path: Path) -> None:
    # OneCycle's rising first 40 % is its warmup: the early-loss window is judged after it.
    config = str(ROOT / "configs/detection3d/tiny.yaml")
    assert main(["train", config, f"run.dir={tmp_path}", "train.progress_bar=off", "train.log_every=1"]) == 0
    assert_doctor_quiet(tmp_path)
