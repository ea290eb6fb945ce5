"""Planted faults: small real runs, each with one mistake, must raise that mistake's finding and no other;
healthy runs must raise nothing.

The faults are rows of the fault library (``tests/doctor/fault_table.py``); this suite runs one or two per rule at
small sizes, ``make doctor-eval`` runs all of them (and a randomised healthy sweep). Runs go in-process through
``trainwell.cli.main``. Every fault is a healthy config plus one change, so a finding that appears is caused by it.
"""

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # fault_tasks:* class paths
sys.path.insert(0, str(HERE.parent / "doctor"))  # the fault library

from fault_table import FAULTS, HAND_POSE, REGRESSION, check_fault, run_training  # noqa: E402

from trainwell.cli import main  # noqa: E402
from trainwell.doctor.offline import diagnose_run  # noqa: E402
from trainwell.records.metrics import read_metrics  # noqa: E402

# One fault per new rule (the older rules have unit tests in tests/engine, the hand-pose label checks in
# tests/doctor/test_hand_pose_checks.py); `make doctor-eval` runs every row of the library.
IN_SUITE = (
    "reg-lr-x1000-short",
    "reg-lr-x100-short",
    "reg-lr-x1e-4-short",
    "hand-lr-x1000-short",
    "reg-shuffled-labels",
    "reg-nan-sample",
    "reg-frozen",
    "reg-weight-decay-10",
    "reg-stale-eval",
    "cap-padding-in-loss",  # the packs' data faults, whose training symptoms fold into them
    "det-camera-heading",
    "rgbd-rgb-255",
)
BY_ID = {fault.id: fault for fault in FAULTS}


def train(args: list[str], run_dir: Path) -> int:
    return main(["train", *args, f"run.dir={run_dir}", "train.progress_bar=off"])


def live_findings(run_dir: Path) -> dict[str, dict]:
    """The last version of each finding the run itself wrote (minus symptoms folded into their cause)."""
    path = run_dir / "findings.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    found = {}
    for r in records:
        if r["kind"] == "finding":
            found[r["id"]] = r
        elif r["kind"] == "merged":
            found.pop(r["id"], None)
    return found


@pytest.mark.parametrize("fault_id", IN_SUITE)
def test_each_fault_raises_its_own_finding_and_no_other(fault_id: str, tmp_path: Path) -> None:
    fault = BY_ID[fault_id]
    outcome = run_training(fault.args, tmp_path)
    assert check_fault(fault, outcome) == [], {k: v.evidence for k, v in outcome.live.items()}
    log = (tmp_path / "train.log").read_text()
    assert "Diagnosis (training doctor)" in log and f"] {fault.expected}" in log


def test_the_fault_library_covers_every_pack_on_main_and_is_documented() -> None:
    assert len(FAULTS) >= 25 and len({f.id for f in FAULTS}) == len(FAULTS)
    assert {f.pack for f in FAULTS} >= {"regression", "hand_pose"}
    doc = (HERE.parents[1] / "docs" / "doctor.md").read_text()
    missing = sorted({f.expected for f in FAULTS if f"`{f.expected}`" not in doc})
    assert not missing, f"finding ids of the fault library not documented in docs/doctor.md: {missing}"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(list(REGRESSION), id="regression example"),
        pytest.param(list(HAND_POSE), id="hand-pose base of the faults"),
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
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert not [r for r in records if r["kind"] == "val"]


def test_ignored_findings_are_not_reported(tmp_path: Path) -> None:
    args = [*REGRESSION, "task.class_path=fault_tasks:EvalModeRegressionTask", "diagnostics.ignore=[model.eval_mode]"]
    assert train(args, tmp_path) == 0
    assert live_findings(tmp_path) == {} and diagnose_run(tmp_path).findings == []


def test_a_loss_contract_mistake_is_one_message_in_the_log_and_in_trainwell_doctor(tmp_path: Path, capsys) -> None:
    sys.path.insert(0, str(HERE))
    assert train([*REGRESSION, "task.class_path=port_tasks:NoGradLossTask"], tmp_path) == 1
    err = capsys.readouterr().err
    assert "loss component 'mse' does not require grad" in err and "Traceback" not in err
    assert main(["doctor", str(tmp_path)]) == 1  # the run crashed: run.crashed, an error, carries the message
    out = capsys.readouterr().out
    assert out.count("loss component 'mse' does not require grad") == 1 and "run.crashed" in out, out
