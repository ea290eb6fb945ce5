"""First-contact friction through the CLI: a bare ``trainwell``, ``train.device=cuda`` without CUDA,
``OMP_NUM_THREADS`` in the start banner, and the CPU autocast warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from small_run import ROOT, train

from trainwell.engine.runtime import cpu_amp_warning


def test_bare_trainwell_prints_the_help_and_exits_0() -> None:
    done = subprocess.run([sys.executable, "-m", "trainwell"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0
    assert "usage: trainwell" in done.stdout and "train" in done.stdout and "export" in done.stdout
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA runs train.device=cuda")
def test_cuda_without_cuda_is_one_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path / "run", "train.device=cuda") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.device=cuda" in err and "train.device=auto" in err
    assert not (tmp_path / "run").exists()  # nothing was built


def test_omp_num_threads_sets_the_threads_in_the_banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        # 3: neither this machine's default (its cores, 2 on the development machine) nor the test runner's 1.
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert train(tmp_path, "train.epochs=1") == 0
        assert "3 thread(s) each" in (tmp_path / "train.log").read_text()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cpu_autocast_warning_is_one_line_in_the_log(tmp_path: Path, amp: str) -> None:
    assert train(tmp_path, f"train.amp={amp}", "train.epochs=1", "train.device=cpu") == 0
    log = (tmp_path / "train.log").read_text()
    expected = cpu_amp_warning(torch.device("cpu"), amp)
    lines = [line for line in log.splitlines() if f"train.amp={amp} on a CPU" in line]
    assert len(lines) == (0 if expected is None else 1)  # silent only where the CPU has the instructions


def test_resume_given_a_run_directory_says_how_to_continue_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train(run, "train.epochs=1") == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(tmp_path / "other", "--resume", str(run)) == 2
    err = capsys.readouterr().err
    assert f"run.dir={run} --resume auto" in err and str(run / "checkpoints" / "last.pt") in err
    assert "Traceback" not in err and "not completely written" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "other").exists()
