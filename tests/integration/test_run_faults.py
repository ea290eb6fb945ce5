"""Faults that must not cost a run its results: a non-finite state is never checkpointed, OS errors are one-paragraph
errors (and a crashed run says so in status.json and in `trainwell doctor`), a second Ctrl-C during the signal-save
lets the save finish, and reading a run (doctor, report) never imports its task."""

from __future__ import annotations

import errno
import json
import os
import signal
import textwrap
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from run_dir_helpers import snapshot, trainwell
from small_run import SignalAtStep, train

from trainwell.cli import main
from trainwell.engine import runlock
from trainwell.engine.checkpoint import LAST, files, load_checkpoint

ONE_EPOCH = ("train.epochs=1",)
NAN_AT_STEP_4 = (
    "task.class_path=fault_tasks:NaNRegressionTask",
    "task.nan_at_batch=7",  # micro-batches 7 and 8 make optimizer step 4
    "checkpoint.latest_every_steps=2",
    "train.log_every=5",  # the NaN reaches a save (step 4) before a log line would show it (step 5)
    "train.clip_grad_norm=null",
)


def status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


class SnapshotAtStep:
    """Hashes the checkpoints directory right after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.taken: dict[str, str] | None = None

    def on_step_end(self, run: Any) -> None:
        if run.state.global_step == self.step:
            self.taken = snapshot(run.checkpoint_dir)


# -- 1. non-finite state ------------------------------------------------------------------------------------------
def test_a_nonfinite_state_is_never_checkpointed_and_resume_continues_from_the_last_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    before_nan = SnapshotAtStep(3)
    assert train(run_dir, *NAN_AT_STEP_4, callbacks=(before_nan,)) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    last = run_dir / "checkpoints" / LAST
    assert "non-finite values in model.0.weight" in out.err and "so this state was not saved" in out.err
    assert f"The newest checkpoint, '{last}' (step 2), holds the last finite state" in out.err
    assert snapshot(run_dir / "checkpoints") == before_nan.taken  # the step-4 save wrote nothing
    payload = load_checkpoint(last)
    assert payload["train_state"]["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in payload["model"].values())
    assert (status(run_dir)["state"], status(run_dir)["step"]) == ("nonfinite_stop", 4)
    assert not (run_dir / runlock.LOCK_FILE).exists()  # given back on the non-finite stop

    # Fixed (no more NaN batch), the run continues from that state and says which file it took.
    assert train(run_dir, *NAN_AT_STEP_4[:1], "task.nan_at_batch=0", "--resume", "auto") == 0
    assert f"Resumed from '{last}' at epoch 1, batch 4/12, step 2" in capsys.readouterr().out
    assert status(run_dir)["state"] == "finished"


# -- 5. OS errors and crashed setups ------------------------------------------------------------------------------
def test_a_run_dir_that_is_a_file_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a run\n")
    assert train(path, *ONE_EPOCH) == 1
    out = capsys.readouterr()
    assert f"run.dir '{path}' is a file, not a directory" in out.err and "Traceback" not in out.out + out.err
    assert path.read_text() == "not a run\n"


def _refuse_under(directory: Path, code: int, name: str) -> Any:
    """``os.open`` that fails with ``code`` for paths under ``directory`` (a read-only filesystem, a full disk
    for the files trainwell creates there), and works elsewhere. Tests run as root, where chmod refuses nothing."""
    real = os.open

    def fake(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(directory)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    fake.__name__ = name
    return fake


def test_a_read_only_run_directory_is_an_error_and_stays_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, *ONE_EPOCH) == 0
    before = snapshot(run_dir)
    capsys.readouterr()
    monkeypatch.setattr(runlock.os, "open", _refuse_under(run_dir, errno.EROFS, "read_only_open"))
    assert train(run_dir, "train.epochs=2", "--resume", "auto") == 1
    out = capsys.readouterr()
    assert f"Cannot use the run directory '{run_dir}': Read-only file system" in out.err
    assert "Traceback" not in out.out + out.err
    monkeypatch.undo()
    assert snapshot(run_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_chmod_read_only_run_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, *ONE_EPOCH) == 0
    before = snapshot(run_dir)
    run_dir.chmod(0o555)
    try:
        assert train(run_dir, "train.epochs=2", "--resume", "auto") == 1
    finally:
        run_dir.chmod(0o755)
    assert f"Cannot use the run directory '{run_dir}'" in capsys.readouterr().err
    assert snapshot(run_dir) == before


def test_disk_full_before_the_first_write_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runlock.os, "pwrite", full)  # the run's first write: who holds its lock
    assert train(run_dir, *ONE_EPOCH) == 1
    out = capsys.readouterr()
    assert f"Cannot use the run directory '{run_dir}': No space left on device" in out.err
    assert "Traceback" not in out.out + out.err
    assert snapshot(run_dir) == {}  # nothing half-written, no lock file left


def test_disk_full_at_the_first_config_write_is_an_error_and_leaves_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainwell.engine import outputs

    run_dir = tmp_path / "run"

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(outputs, "atomic_write_text", full)  # the lock was written; config.yaml does not fit
    assert train(run_dir, *ONE_EPOCH) == 1
    out = capsys.readouterr()
    assert f"Cannot write into the run directory '{run_dir}': No space left on device" in out.err
    assert f"'{run_dir / 'config.yaml'}'" in out.err and "Traceback" not in out.out + out.err
    assert snapshot(run_dir) == {}  # no lock file left behind
    monkeypatch.undo()
    assert train(run_dir, *ONE_EPOCH) == 0  # the directory is free and holds no run: used as is


def test_a_checkpoint_without_write_permission_crashes_the_run_by_name_and_the_doctor_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"

    def denied(content: Any, handle: IO[bytes]) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), handle.name)

    monkeypatch.setattr(files, "serialize", denied)
    assert train(run_dir, *ONE_EPOCH) == 1
    out = capsys.readouterr()
    last = run_dir / "checkpoints" / LAST
    assert f"Could not write checkpoint '{last}': Permission denied" in out.err
    assert "Traceback" not in out.out + out.err
    assert status(run_dir)["state"] == "crashed" and f"'{last}'" in status(run_dir)["error"]
    assert not list((run_dir / "checkpoints").iterdir())  # no temp file left behind

    monkeypatch.undo()
    assert main(["doctor", str(run_dir)]) == 1
    text = capsys.readouterr().out
    assert "crashed" in text and "run.crashed" in text and "Permission denied" in text


USER_TASK = """
import errno, os
from dataclasses import dataclass
from pathlib import Path
from trainwell.tasks.regression import RegressionTask, RegressionTaskConfig

@dataclass
class UserTaskConfig(RegressionTaskConfig):
    class_path: str = "user_task:UserTask"
    data_file: str = ""
    backbone_file: str = ""

class UserTask(RegressionTask):
    Config = UserTaskConfig

    def build_datasets(self):
        if self.cfg.data_file and not Path(self.cfg.data_file).is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.cfg.data_file)
        return super().build_datasets()

    def build_model(self):
        if self.cfg.backbone_file:  # pretrained weights the model starts from
            with open(self.cfg.backbone_file, "rb"):
                pass
        return super().build_model()
"""


@pytest.fixture
def user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's own task package directory (on sys.path for the in-process runs)."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "user_task.py").write_text(textwrap.dedent(USER_TASK))
    monkeypatch.syspath_prepend(str(modules))
    return modules


def test_a_setup_failure_leaves_a_crashed_status_that_the_doctor_reports(
    tmp_path: Path, user_task: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, missing = tmp_path / "run", tmp_path / "data" / "train.bin"
    args = ("task.class_path=user_task:UserTask", f"task.data_file={missing}", *ONE_EPOCH)
    assert train(run_dir, *args) == 1
    out = capsys.readouterr()
    assert f"No such file or directory '{missing}'" in out.err and "Traceback" not in out.out + out.err
    assert status(run_dir)["state"] == "crashed" and str(missing) in status(run_dir)["error"]

    result = trainwell("doctor", str(run_dir), pythonpath=user_task)
    assert result.returncode == 1, result.stdout
    assert "crashed" in result.stdout and "before training started" in result.stdout
    assert str(missing) in result.stdout and "Traceback" not in result.stdout


def test_a_model_that_cannot_be_built_leaves_a_crashed_status_that_the_doctor_reports(
    tmp_path: Path, user_task: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, missing = tmp_path / "run", tmp_path / "weights" / "backbone.pt"
    assert train(run_dir, "task.class_path=user_task:UserTask", f"task.backbone_file={missing}", *ONE_EPOCH) == 1
    out = capsys.readouterr()
    assert f"No such file or directory '{missing}'" in out.err and "Traceback" not in out.out + out.err
    recorded = status(run_dir)
    assert (recorded["state"], recorded["step"]) == ("crashed", 0) and str(missing) in recorded["error"]
    assert not (run_dir / runlock.LOCK_FILE).exists() and not list(run_dir.glob("checkpoints/*"))

    assert main(["doctor", str(run_dir)]) == 1
    text = capsys.readouterr().out
    assert "run.crashed" in text and "before training started" in text and str(missing) in text


def test_an_optimizer_that_cannot_be_built_leaves_a_crashed_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, *ONE_EPOCH, "optim.param_groups=[{match: 'backbone.*'}]") == 1
    out = capsys.readouterr()
    assert "backbone.*" in out.err and "Traceback" not in out.out + out.err
    assert status(run_dir)["state"] == "crashed" and "OptimConfigError" in status(run_dir)["error"]
    assert not (run_dir / runlock.LOCK_FILE).exists()


# -- 6. a second Ctrl-C during the signal-save ----------------------------------------------------------------------
@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_second_ctrl_c_during_the_signal_save_lets_the_save_finish(
    first: signal.Signals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (or SIGTERM from a scheduler), then Ctrl-C while ``last.pt`` is written: the file completes and the
    run ends as its first signal asked, 128 + N (130 / 143), without a traceback."""
    real = files.serialize

    class CtrlCMidWrite:
        """A file handle that presses Ctrl-C again after the first chunks of the checkpoint are written."""

        def __init__(self, handle: IO[bytes]) -> None:
            self.handle, self.writes = handle, 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return self.handle.write(data)

        def flush(self) -> None:
            self.handle.flush()

    def second_ctrl_c_in_the_step_9_save(content: Any, handle: IO[bytes]) -> None:
        step = content["train_state"]["global_step"]
        real(content, CtrlCMidWrite(handle) if step == 9 else handle)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "serialize", second_ctrl_c_in_the_step_9_save)
    assert train(tmp_path, callbacks=(SignalAtStep(9, first),)) == 128 + first
    out = capfd.readouterr()  # the handler writes to fd 2 directly
    assert "finishing the checkpoint being written first" in out.err
    assert "Traceback" not in out.out + out.err
    assert load_checkpoint(tmp_path / "checkpoints" / LAST)["train_state"]["global_step"] == 9  # complete, verified
    assert not list((tmp_path / "checkpoints").glob(".*.tmp-*"))
    assert (status(tmp_path)["state"], status(tmp_path)["signal"]) == ("stopped_by_signal", first)
    assert not (tmp_path / runlock.LOCK_FILE).exists()  # the lock is given back on a signal stop too


# -- 13. reading a run never runs its code --------------------------------------------------------------------------
def test_doctor_and_report_never_import_the_runs_task(
    tmp_path: Path, user_task: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, "task.class_path=user_task:UserTask", *ONE_EPOCH) == 0
    capsys.readouterr()
    marker = tmp_path / "imported.txt"
    # The task module turns hostile: importing it would leave a marker and fail.
    (user_task / "user_task.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(3)\n")
    before = snapshot(run_dir)

    doctor = trainwell("doctor", str(run_dir), pythonpath=user_task)
    assert doctor.returncode == 0, doctor.stdout
    assert f"Run {run_dir} (finished at step 6)" in doctor.stdout
    report = trainwell("report", str(run_dir), pythonpath=user_task)
    assert report.returncode == 0, report.stdout
    page = (run_dir / "report.html").read_text()
    assert "user_task:UserTask" in page and "Validation metrics" in page
    assert not marker.exists()

    (user_task / "user_task.py").unlink()  # the task's code is gone altogether
    doctor = trainwell("doctor", str(run_dir), pythonpath=user_task)
    assert doctor.returncode == 0 and "finished at step 6" in doctor.stdout
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if not k.startswith("report")} == before  # reading changed nothing
