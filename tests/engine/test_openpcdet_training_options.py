"""Engine options that OpenPCDet's training flags map to: augmentation off for the last epochs
(``NUM_LAST_EPOCHS``), wall-clock checkpoints (``--ckpt_save_time_interval``) and ``--eval_all``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from trainwell.cli import main
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
REGRESSION = str(ROOT / "configs/examples/regression.yaml")
DETECTION = str(ROOT / "configs/detection3d/tiny.yaml")
# 128 samples / batch 16 = 8 optimizer steps per epoch, 2 epochs; log every 2 steps.
SMALL = ["data.train_size=128", "train.batch_size=16", "train.epochs=2", "train.log_every=2", "train.progress_bar=off"]


class _AugmentationSeen:
    """Records, at each step, whether the detection training set augments (what the task set for the epoch)."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, bool] = {}

    def on_step_end(self, run: Any) -> None:
        self.by_epoch[run.state.epoch] = run.task.train_set.augment_on


def test_augmentation_is_off_for_the_last_epochs_and_the_switch_is_logged(tmp_path: Path) -> None:
    seen = _AugmentationSeen()
    args = ["train", DETECTION, f"run.dir={tmp_path}", "data.augment.disable_from_epoch=null"]
    assert main([*args, "data.disable_augmentation_last_epochs=1", "eval.every_epochs=0"], callbacks=[seen]) == 0
    assert seen.by_epoch == {0: True, 1: True, 2: True, 3: False}  # 4 epochs, the last one without augmentation
    log = (tmp_path / "train.log").read_text()
    assert "Augmentation off from epoch 4 of 4 (data.disable_augmentation_last_epochs=1)" in log


class _StopAt(_AugmentationSeen):
    """Also sends this process SIGTERM right after optimizer step ``step`` (through the run's own handlers)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_step_end(self, run: Any) -> None:
        super().on_step_end(run)
        if run.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_run_resumed_within_the_last_epochs_trains_them_without_augmentation(tmp_path: Path) -> None:
    # 4 epochs of 6 steps; stopped after step 20 (inside the last epoch), resumed there: the resumed part of the epoch
    # must not augment either, and the log says so again.
    args = ["train", DETECTION, f"run.dir={tmp_path}", "data.augment.disable_from_epoch=null", "eval.every_epochs=0"]
    args += ["data.disable_augmentation_last_epochs=1", "train.log_every=1"]
    stopped = _StopAt(20)
    assert main(args, callbacks=[stopped]) == 143
    assert stopped.by_epoch == {0: True, 1: True, 2: True, 3: False}
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["train_state"]["global_step"] == 20
    resumed = _AugmentationSeen()
    assert main([*args, "--resume", "auto"], callbacks=[resumed]) == 0
    assert resumed.by_epoch == {3: False}
    log = (tmp_path / "train.log").read_text()
    assert log.count("Augmentation off from epoch 4 of 4 (data.disable_augmentation_last_epochs=1)") == 2


def test_a_task_without_set_augmentation_is_refused_by_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", REGRESSION, f"run.dir={tmp_path}", *SMALL, "data.disable_augmentation_last_epochs=1"])
    err = capsys.readouterr().err
    assert code != 0 and "data.disable_augmentation_last_epochs" in err and "set_augmentation" in err
    assert "Traceback" not in err


class _LastAt:
    """The step ``last.pt`` holds after optimizer step 2 (a logging step, mid-epoch)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_step_end(self, run: Any) -> None:
        if run.state.global_step == 2:
            last = run.checkpoint_dir / "last.pt"
            self.step = load_checkpoint(last)["train_state"]["global_step"] if last.is_file() else None


@pytest.mark.parametrize(("minutes", "expected"), [(1e-9, 2), (1e6, None)])
def test_wall_clock_checkpoints(tmp_path: Path, minutes: float, expected: int | None) -> None:
    # A time already up writes last.pt at the first logging step; one far away writes nothing mid-epoch.
    seen = _LastAt()
    assert (
        main(
            ["train", REGRESSION, f"run.dir={tmp_path}", *SMALL, f"checkpoint.every_minutes={minutes}"],
            callbacks=[seen],
        )
        == 0
    )
    assert seen.step == expected


def test_eval_all_checkpoints_in_step_order_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", REGRESSION, f"run.dir={run}", *SMALL, "checkpoint.every=4", "checkpoint.keep=all"]) == 0
    names = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000004.pt", "step_00000008.pt", "step_00000012.pt", "step_00000016.pt"]
    assert main(["eval", "--all-checkpoints", str(run), "--out", str(tmp_path / "all.json")]) == 0
    rows = json.loads((tmp_path / "all.json").read_text())
    assert [(r["checkpoint"], r["step"]) for r in rows] == [(n, int(n[5:13])) for n in names]
    # The metrics of the step-16 checkpoint are the run's own final evaluation (the same exactly-once path).
    val = read_metrics(run / "metrics.jsonl")
    final = [r for r in val if r["kind"] == "val" and r["step"] == 16][-1]
    assert rows[-1]["metrics"]["mse"] == pytest.approx(final["mse"], rel=1e-6)
    records = read_metrics(run / "eval_all" / "metrics.jsonl")
    assert [(r["kind"], r["step"], r["checkpoint"]) for r in records] == [("val", int(n[5:13]), n) for n in names]
    assert any((run / "eval_all" / "tb").iterdir())
    # A second pass evaluates nothing again.
    assert main(["eval", "--all-checkpoints", str(run), "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == []


def test_watch_stops_when_the_run_has_ended(tmp_path: Path) -> None:
    # The run finished before the watcher started: one scan, then it stops by itself (no waiting).
    run = tmp_path / "run"
    assert main(["train", REGRESSION, f"run.dir={run}", *SMALL, "checkpoint.every=8"]) == 0
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    out = tmp_path / "watch.json"
    assert main(["eval", "--all-checkpoints", str(run), "--watch", "--poll-seconds", "3600", "--out", str(out)]) == 0
    assert [r["step"] for r in json.loads(out.read_text())] == [8, 16]


def test_eval_needs_a_checkpoint_or_a_run(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", REGRESSION]) != 0
    assert "--checkpoint FILE or --all-checkpoints RUN_DIR" in capsys.readouterr().err


def test_watch_waits_for_new_checkpoints_while_the_run_trains(tmp_path: Path) -> None:
    import shutil
    import threading
    import time

    from trainwell.engine.rundir import write_status

    done = tmp_path / "done"
    assert main(["train", REGRESSION, f"run.dir={done}", *SMALL, "checkpoint.every=8"]) == 0
    run = tmp_path / "run"  # the same run "while training": one checkpoint so far, status running
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(done / "config.yaml", run / "config.yaml")
    shutil.copy(done / "checkpoints" / "step_00000008.pt", run / "checkpoints")
    write_status(run, "running", step=8)
    out = tmp_path / "watch.json"
    codes: list[int] = []
    watcher = threading.Thread(
        target=lambda: codes.append(
            main(["eval", "--all-checkpoints", str(run), "--watch", "--poll-seconds", "0.2", "--out", str(out)])
        )
    )
    watcher.start()
    records = run / "eval_all" / "metrics.jsonl"
    for _ in range(600):  # until the first checkpoint is recorded (a deadline, not a timing assertion)
        if records.is_file() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.1)
    assert watcher.is_alive()  # still watching: the run is running
    shutil.copy(done / "checkpoints" / "step_00000016.pt", run / "checkpoints")
    write_status(run, "finished", step=16)
    watcher.join(timeout=120)
    assert not watcher.is_alive() and codes == [0]
    assert [r["step"] for r in json.loads(out.read_text())] == [8, 16]


def test_eval_all_reads_sharded_periodic_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    extra = ["checkpoint.every=8", "checkpoint.keep=all", "checkpoint.format=sharded"]
    assert main(["train", REGRESSION, f"run.dir={run}", *SMALL, *extra]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000008.dcp", "step_00000016.dcp"]
    assert main(["eval", "--all-checkpoints", str(run), "--out", str(tmp_path / "all.json")]) == 0
    rows = json.loads((tmp_path / "all.json").read_text())
    assert [(r["checkpoint"], r["step"]) for r in rows] == [("step_00000008.dcp", 8), ("step_00000016.dcp", 16)]
    final = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "val" and r["step"] == 16][-1]
    assert rows[-1]["metrics"]["mse"] == pytest.approx(final["mse"], rel=1e-6)


def test_eval_all_of_a_run_without_periodic_checkpoints_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", REGRESSION, f"run.dir={run}", *SMALL, "checkpoint.every=0"]) == 0  # last.pt only
    capsys.readouterr()
    assert main(["eval", "--all-checkpoints", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds no periodic checkpoints" in err and "--checkpoint" in err and "Traceback" not in err
    assert not (run / "eval_all").exists()
