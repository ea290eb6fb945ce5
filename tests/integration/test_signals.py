"""SIGTERM / SIGINT / SIGUSR1: finish the step, write a resumable last.pt, exit with 128 + N; Ctrl-C twice aborts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from small_run import CONFIG, ROOT, SMALL, SignalAtStep, train

from trainwell.cli import main
from trainwell.engine.checkpoint import LAST, load_checkpoint
from trainwell.engine.distributed import DistEnv
from trainwell.engine.runlock import LOCK_FILE
from trainwell.engine.signals import StopRequest


def last_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / LAST)


def test_stop_request_records_the_first_signal_and_a_second_ctrl_c_aborts() -> None:
    before = signal.getsignal(signal.SIGTERM)
    request = StopRequest(DistEnv())
    request.install()
    try:
        assert not request.should_stop(global_step=1, sync=False)
        os.kill(os.getpid(), signal.SIGINT)
        assert request.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # a later, different signal changes nothing
        assert request.should_stop(global_step=2, sync=False) and request.agreed == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, in the main thread
    finally:
        request.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_writes_a_resumable_last_pt_and_exits_143(tmp_path: Path) -> None:
    assert train(tmp_path / "reference") == 0

    run_dir = tmp_path / "run"
    assert train(run_dir, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    state = last_state(run_dir)["train_state"]
    assert (state["epoch"], state["global_step"], state["batch_in_epoch"]) == (1, 9, 6)  # the step it was in
    log = (run_dir / "train.log").read_text()
    assert f"Stopped by SIGTERM at epoch 2, batch 6/12, step 9; saved '{run_dir / 'checkpoints' / LAST}'" in log
    assert f"run.dir={run_dir} --resume auto" in log

    assert train(run_dir, "--resume", "auto") == 0
    resumed, reference = last_state(run_dir)["model"], last_state(tmp_path / "reference")["model"]
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_second_ctrl_c_aborts_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path, callbacks=(SignalAtStep(9, signal.SIGINT, signal.SIGINT),)) == 130
    assert "aborted (second Ctrl-C)" in capsys.readouterr().err
    assert last_state(tmp_path)["train_state"]["global_step"] == 8  # the periodic save before, not step 9
    assert not list((tmp_path / "checkpoints").glob(".*.tmp-*"))
    # The user's abort, recorded as such (not "crashed" with an empty KeyboardInterrupt): the doctor says so.
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["signal"], status["aborted"], status["step"]) == ("stopped_by_signal", 2, True, 9)
    assert main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "aborted by a second Ctrl-C at step 9; resumable from its last checkpoint" in out
    assert "run.crashed" not in out
    assert not (tmp_path / LOCK_FILE).exists()


def test_external_sigusr1_stops_a_real_process_with_exit_138(tmp_path: Path) -> None:
    """SLURM's pre-emption warning, sent from outside to a running process (exit code seen by the shell)."""
    output = tmp_path / "out.txt"
    command = [sys.executable, "-m", "trainwell", "train", CONFIG, *SMALL, "train.epochs=10000", f"run.dir={tmp_path}"]
    with open(output, "w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            deadline = time.monotonic() + 60
            while "Epoch 1/10000" not in output.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, output.read_text()
                time.sleep(0.05)
            process.send_signal(signal.SIGUSR1)
            assert process.wait(timeout=60) == 138, output.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    text = output.read_text()
    assert "received SIGUSR1" in text and "Stopped by SIGUSR1" in text
    assert last_state(tmp_path)["train_state"]["global_step"] >= 6
