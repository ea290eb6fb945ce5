"""``eval.best_metric`` naming a metric the task does not report is refused before training starts, with the
nearest valid name — not a KeyError at the first evaluation."""

import hashlib
from pathlib import Path

import pytest

from trainwell.cli import EXIT_CONFIG_ERROR, main
from trainwell.engine.best import BestMetricError, check_best_metric

REGRESSION = "configs/examples/regression.yaml"
HAND_POSE = "configs/hand_pose/tiny.yaml"
SMALL = ["data.train_size=64", "data.val_size=16", "train.epochs=1", "schedule.warmup_steps=0", "train.device=cpu"]


def _hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file()
    }


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyError" not in err
    return err


def test_typo_is_refused_with_the_nearest_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    err = _refused(["train", REGRESSION, *SMALL, f"run.dir={run}", "eval.best_metric=msee"], capsys)
    assert "'eval.best_metric' is 'msee'" in err and "no metric 'msee' (did you mean 'mse'?)" in err
    assert "It reports: mae, mse." in err
    assert not run.exists()  # refused before the run directory is made


def test_every_name_of_an_expression_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    err = _refused(["train", HAND_POSE, f"run.dir={run}", "eval.best_metric=(mpjpe + pa_mpjp) / 2"], capsys)
    assert "no metric 'pa_mpjp' (did you mean 'pa_mpjpe'?)" in err and "'mpjpe'" not in err.split("It reports")[0]
    assert "grouped names such as '" in err  # per-joint (and server) names are counted, not listed one by one
    assert err.count("mpjpe_joint/") <= 1
    assert not run.exists()


def test_existing_run_directory_is_left_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", REGRESSION, *SMALL, f"run.dir={run}", "train.progress_bar=off"]) == 0
    before = _hashes(run)
    assert "checkpoints/last.pt" in before and "config.yaml" in before
    capsys.readouterr()
    args = ["train", REGRESSION, *SMALL, f"run.dir={run}", "eval.best_metric=rmse", "--resume", "auto"]
    err = _refused(args, capsys)
    assert "no metric 'rmse'" in err
    assert _hashes(run) == before


def test_undeclared_names_skip_the_check() -> None:
    check_best_metric("anything_at_all", None, "OldTask")  # a task without metric_names(): nothing to check
    check_best_metric(None, {"mse"}, "RegressionTask")
    check_best_metric("min(mse, 2 * mae)", {"mse", "mae"}, "RegressionTask")
    with pytest.raises(BestMetricError, match=r"no metric 'mae_' \(did you mean 'mae'\?\)"):
        check_best_metric("min(mse, mae_)", {"mse", "mae"}, "RegressionTask")


UNDECLARED = """
from trainwell.tasks.regression import RegressionTask

class UndeclaredTask(RegressionTask):
    def metric_names(self):
        return None  # an older or minimal task: nothing to check before training
"""


def test_a_task_without_declared_names_fails_at_the_first_evaluation_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    (tmp_path / "undeclared.py").write_text(UNDECLARED)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    args = ["train", REGRESSION, *SMALL, f"run.dir={run}", "task.class_path=undeclared:UndeclaredTask"]
    err = _refused([*args, "eval.best_metric=msee", "train.progress_bar=off"], capsys)
    assert "eval.best_metric 'msee' uses msee, which the evaluator does not report; available metrics: mae, mse" in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "crashed" and "msee" in status["error"]
