"""Planted faults: small real runs, each with one mistake, must raise that mistake's finding and no other;
healthy runs must raise nothing.

Runs go in-process through ``trainwell.cli.main``; the faulty tasks live in ``fault_tasks.py`` beside this
file. Every fault is the healthy config plus one change, so a finding that appears is caused by the fault.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml

from trainwell.cli import main
from trainwell.doctor.offline import diagnose_run

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # fault_tasks:* class paths

REGRESSION = ["configs/examples/regression.yaml"]
REGRESSION_LR = float(yaml.safe_load(Path(REGRESSION[0]).read_text())["optim"]["lr"])  # "3e-3": a YAML 1.1 string
REGRESSION_L1 = float(yaml.safe_load(Path(REGRESSION[0]).read_text())["task"]["loss_weights"]["l1"])
# A few-second hand-pose run: every key the doctor's thresholds depend on is pinned here.
HAND_POSE = [
    "configs/hand_pose/tiny.yaml",
    "data.train_size=512",
    "data.val_size=128",
    "task.model.hidden=64",
    "train.batch_size=64",
    "train.epochs=4",
    "train.log_every=2",
    "optim.lr=3e-3",
    "schedule.warmup_steps=10",
]

FAULTS = {
    # name: (config + overrides, the one finding expected, exit status of `trainwell train`)
    "targets in metres": (
        [*HAND_POSE, "task.class_path=fault_tasks:MetresHandPoseTask"],
        "hand_pose.units_not_mm",
        0,
    ),
    "targets not root-centred": (
        [*HAND_POSE, "task.class_path=fault_tasks:CentroidCentredHandPoseTask"],
        "hand_pose.not_root_centred",
        0,
    ),
    "learning rate 100x too high": ([*REGRESSION, f"optim.lr={REGRESSION_LR * 100}"], "optim.large_updates", 0),
    "learning rate 1000x too low": ([*REGRESSION, f"optim.lr={REGRESSION_LR / 1000}"], "loss.not_decreasing", 0),
    "evaluation returns constant metrics": (
        [*REGRESSION, "task.class_path=fault_tasks:StaleEvalRegressionTask"],
        "val.stuck",
        0,
    ),
    "slow dataset": ([*REGRESSION, "task.class_path=fault_tasks:SlowDataRegressionTask"], "data.input_bound", 0),
    "loss term weighted 1e4x": (
        [*REGRESSION, f"task.loss_weights.l1={REGRESSION_L1 * 1e4}"],
        "loss.component_dominates",
        0,
    ),
    "NaN at step 7": ([*REGRESSION, "task.class_path=fault_tasks:NaNRegressionTask"], "train.nonfinite", 1),
    "NaN at step 7, skipped": (
        [*REGRESSION, "task.class_path=fault_tasks:NaNRegressionTask", "diagnostics.nonfinite=skip"],
        "train.nonfinite_skipped",
        0,
    ),
    "model switched to eval mode": (
        [*REGRESSION, "task.class_path=fault_tasks:EvalModeRegressionTask"],
        "model.eval_mode",
        0,
    ),
}


def train(args: list[str], run_dir: Path) -> int:
    return main(["train", *args, f"run.dir={run_dir}", "train.progress_bar=off"])


def live_findings(run_dir: Path) -> dict[str, dict]:
    """The last version of each finding the run itself wrote."""
    path = run_dir / "findings.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["id"]: r for r in records if r["kind"] == "finding"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_raises_its_own_finding_and_no_other(fault: str, tmp_path: Path, capsys) -> None:
    args, expected, status = FAULTS[fault]
    assert train(args, tmp_path) == status
    found = live_findings(tmp_path)
    assert set(found) == {expected}, {k: v["evidence"] for k, v in found.items()}
    log = (tmp_path / "train.log").read_text()
    assert "Diagnosis (training doctor)" in log and f"] {expected}" in log
    # `trainwell doctor` finds the same from the files, and exits non-zero exactly for an error.
    offline = diagnose_run(tmp_path)
    assert [f.id for f in offline.findings] == [expected]
    severe = found[expected]["severity"] == "error"
    capsys.readouterr()
    assert main(["doctor", str(tmp_path)]) == (1 if severe else 0)
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(REGRESSION, id="regression example"),
        pytest.param(HAND_POSE, id="hand-pose base of the faults"),
        pytest.param(["configs/hand_pose/tiny.yaml"], id="hand-pose tiny config", marks=pytest.mark.slow),
    ],
)
def test_healthy_runs_raise_nothing(args: list[str], tmp_path: Path) -> None:
    assert train(args, tmp_path) == 0
    assert live_findings(tmp_path) == {}
    assert diagnose_run(tmp_path).findings == []
    assert "Diagnosis (training doctor): no problems found" in (tmp_path / "train.log").read_text()
    assert main(["doctor", str(tmp_path)]) == 0


def test_an_evaluation_that_sees_one_shard_is_refused_by_the_engine(tmp_path: Path, capsys) -> None:
    # Scoring part of the validation set is not a doctor finding: evaluation's coverage check stops the
    # run before any metric from a partial set is reported.
    assert train([*REGRESSION, "task.class_path=fault_tasks:OneShardEvalRegressionTask"], tmp_path) == 1
    assert "did not see every sample exactly once" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["kind"] == "val"]


def test_ignored_findings_are_not_reported(tmp_path: Path) -> None:
    args = [*REGRESSION, "task.class_path=fault_tasks:EvalModeRegressionTask", "diagnostics.ignore=[model.eval_mode]"]
    assert train(args, tmp_path) == 0
    assert live_findings(tmp_path) == {} and diagnose_run(tmp_path).findings == []
