"""A run directory has one owner: a second run is refused (or moves the first aside on request), two processes never
write one directory (a lock, also recognised when its holder was SIGKILLed), and a resume that does not fit the
checkpoint is refused before anything is written. Every refusal leaves the directory byte for byte as it was."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from run_dir_helpers import snapshot
from small_run import ROOT, train

from trainwell.engine.checkpoint import LAST, load_checkpoint
from trainwell.engine.runlock import LOCK_FILE
from trainwell.records.metrics import read_metrics

ONE_EPOCH = ("train.epochs=1",)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (copied by the tests that change it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train(run_dir, *ONE_EPOCH) == 0
    return run_dir


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_a_second_run_into_a_run_directory_is_refused_and_changes_nothing(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    before = snapshot(run_dir)
    capsys.readouterr()
    assert train(run_dir, *ONE_EPOCH) == 1
    out = capsys.readouterr()
    assert f"run.dir '{run_dir}' already holds a run" in out.err
    assert "--resume auto" in out.err and "another run.dir=DIR" in out.err and "--overwrite" in out.err
    assert "Traceback" not in out.out + out.err
    assert snapshot(run_dir) == before  # no lock file left, no config.yaml rewritten, no record appended


def test_overwrite_moves_the_old_run_aside_and_keeps_it(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    before = snapshot(run_dir)
    assert train(run_dir, *ONE_EPOCH, "--overwrite") == 0
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert f"moved the previous run in '{run_dir}' to '{aside}'" in capsys.readouterr().out
    assert snapshot(aside) == before  # the old run, whole and unchanged, under its new name
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "val"] == [6]  # one run's records, not two
    assert not (run_dir / LOCK_FILE).exists() and not (aside / LOCK_FILE).exists()


def _holder(run_dir: Path, then: str) -> subprocess.Popen[str]:
    """A real second process that takes the run directory's lock, says so, then waits (or SIGKILLs itself)."""
    code = (
        "import os, signal, sys; from pathlib import Path; from trainwell.engine.runlock import RunLock\n"
        f"lock = RunLock.acquire(Path({str(run_dir)!r})); print('locked', flush=True)\n"
        + ("os.kill(os.getpid(), signal.SIGKILL)\n" if then == "sigkill" else "sys.stdin.readline()\n")
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_a_run_directory_locked_by_a_live_process_is_refused_naming_its_host_and_pid(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    holder = _holder(run_dir, then="wait")
    try:
        before = snapshot(run_dir)
        capsys.readouterr()
        assert train(run_dir, *ONE_EPOCH, "--resume", "auto") == 1
        err = capsys.readouterr().err
        assert f"'{run_dir}' is in use by process {holder.pid} on host {socket.gethostname()}" in err
        assert "Traceback" not in err
        assert snapshot(run_dir) == before
        # --overwrite never moves a live run aside.
        assert train(run_dir, *ONE_EPOCH, "--overwrite") == 1
        assert f"is in use by process {holder.pid}" in capsys.readouterr().err
        assert snapshot(run_dir) == before and [p.name for p in tmp_path.iterdir()] == ["run"]
    finally:
        holder.communicate("\n", timeout=30)
    # Released by its holder: the next run takes the directory (and deletes the lock file when it ends).
    assert train(run_dir, *ONE_EPOCH, "--resume", "auto") == 0
    assert not (run_dir / LOCK_FILE).exists()


def test_a_lock_left_by_a_sigkilled_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _holder(run_dir, then="sigkill")
    assert holder.wait(timeout=30) == -signal.SIGKILL
    left = json.loads((run_dir / LOCK_FILE).read_text())
    assert left["pid"] == holder.pid  # the file outlived its process; nobody holds the lock any more
    assert train(run_dir, *ONE_EPOCH) == 0
    assert not (run_dir / LOCK_FILE).exists()


def test_a_training_run_killed_mid_run_leaves_a_stale_lock_that_resume_takes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = str(Path(__file__).with_name("small_run.py"))
    from small_run import CONFIG, SMALL

    command = [sys.executable, script, json.dumps({"kill_at_step": 5}), "train", CONFIG, *SMALL, f"run.dir={run_dir}"]
    killed = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / LOCK_FILE).exists()
    assert train(run_dir, "--resume", "auto") == 0
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]["global_step"] == 18
    assert not (run_dir / LOCK_FILE).exists()


def test_resume_with_a_changed_model_is_refused_before_anything_is_written(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    before = snapshot(run_dir)
    capsys.readouterr()
    assert train(run_dir, *ONE_EPOCH, "task.hidden=32", "--resume", "auto") == 1
    out = capsys.readouterr()
    err = out.err
    assert f"Cannot resume from '{run_dir / 'checkpoints' / LAST}'" in err
    assert "0.weight (checkpoint (16, 8) vs model (32, 8))" in err and "shape mismatch" in err
    assert "task.hidden: 16 → 32" in err and "Config keys that differ from the checkpoint's (1)" in err
    assert f"Nothing in '{run_dir}' was changed" in err
    assert "Traceback" not in out.out + err
    assert snapshot(run_dir) == before  # config.yaml, train.log, metrics.jsonl, status.json: all as they were


def test_every_resume_records_its_config_beside_the_original(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    original = (run_dir / "config.yaml").read_bytes()
    assert train(run_dir, "train.epochs=2", "--resume", "auto") == 0
    assert train(run_dir, "train.epochs=3", "--resume", "auto") == 0
    assert (run_dir / "config.yaml").read_bytes() == original  # history is never rewritten
    assert "epochs: 2" in (run_dir / "config.resume-1.yaml").read_text()
    assert "epochs: 3" in (run_dir / "config.resume-2.yaml").read_text()
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]["global_step"] == 18


def test_a_crashed_setup_is_continued_with_resume_auto_and_keeps_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, *ONE_EPOCH, "optim.param_groups=[{match: 'backbone.*'}]") == 1  # crashed in setup
    crashed = snapshot(run_dir)
    assert train(run_dir, *ONE_EPOCH) == 1  # it holds a run now: refused, unchanged
    assert snapshot(run_dir) == crashed
    assert train(run_dir, *ONE_EPOCH, "--resume", "auto", "--overwrite") == 2  # one or the other
    assert "pass one of them" in capsys.readouterr().err
    assert train(run_dir, *ONE_EPOCH, "--resume", "auto") == 0  # the fix, as the doctor's advice says
    assert snapshot(run_dir)["config.yaml"] == crashed["config.yaml"]  # the first attempt's config, kept
    assert "match: backbone.*" not in (run_dir / "config.resume-1.yaml").read_text()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_the_python_api_refuses_a_used_directory_and_continues_it_on_request(finished: Path, tmp_path: Path) -> None:
    """``trainwell.build_run`` keeps the same rule as the CLI (docs/run_directory.md)."""
    from small_run import CONFIG, SMALL

    from trainwell import Trainer, build_run, build_task, load_config
    from trainwell.engine.resuming import resume
    from trainwell.engine.rundir import RunDirError

    run_dir = copy_run(finished, tmp_path / "run")
    before = snapshot(run_dir)
    cfg = load_config(CONFIG, [*SMALL, f"run.dir={run_dir}", "train.epochs=2"])
    with pytest.raises(RunDirError, match="already holds a run"):
        build_run(cfg, build_task(cfg))
    assert snapshot(run_dir) == before  # refused: nothing written, no lock file left

    run = build_run(cfg, build_task(cfg), existing_run="continue")
    assert resume(run, "auto") == run_dir / "checkpoints" / LAST
    Trainer(run).fit()
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["train_state"]["global_step"] == 12  # 6 more steps
    assert snapshot(run_dir)["config.yaml"] == before["config.yaml"] and (run_dir / "config.resume-1.yaml").exists()
    assert not (run_dir / LOCK_FILE).exists()
