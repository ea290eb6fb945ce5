"""Process settings and the switches for fast device paths, checked on the CPU."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from small_run import SignalAtStep, train
from test_resume import assert_bitwise_equal, final_state

from trainwell.engine.runtime import configure_threads, cpu_amp_warning
from trainwell.engine.tensors import move_to_device


def test_threads_default_to_the_cores_divided_by_the_local_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("trainwell.engine.runtime.available_cores", lambda: 8)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert configure_threads(None) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
        assert configure_threads(None) == 1  # never zero
        assert configure_threads(3) == 3 and torch.get_num_threads() == 3  # an explicit setting wins
    finally:
        torch.set_num_threads(before)


def test_omp_num_threads_is_honoured_unless_train_num_threads_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("trainwell.engine.runtime.available_cores", lambda: 8)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_threads(None) == 3 and torch.get_num_threads() == 3
        assert configure_threads(2) == 2  # train.num_threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
        assert configure_threads(None) == 8  # ignored: the cores
    finally:
        torch.set_num_threads(before)


def test_the_thread_count_is_in_the_start_banner(tmp_path: Path) -> None:
    assert train(tmp_path, "train.num_threads=1", "train.epochs=1") == 0
    assert "1 thread(s) each" in (tmp_path / "train.log").read_text()


def test_amp_warning_only_for_cpu_autocast_without_native_instructions() -> None:
    assert cpu_amp_warning(torch.device("cpu"), "off") is None
    assert cpu_amp_warning(torch.device("cuda"), "bf16") is None
    assert cpu_amp_warning(torch.device("cuda"), "fp16") is None
    for amp, probe in (("bf16", "_is_mkldnn_bf16_supported"), ("fp16", "_is_mkldnn_fp16_supported")):
        message = cpu_amp_warning(torch.device("cpu"), amp)
        native = bool(getattr(torch.ops.mkldnn, probe)())
        assert (message is None) == native
        if message is not None:
            assert "train.amp=off" in message and "slower than fp32" in message and "\n" not in message


def test_channels_last_switches_only_4d_floating_tensors() -> None:
    batch = {"rgbd": torch.randn(2, 4, 8, 8), "mask": torch.ones(2, 4, 8, 8, dtype=torch.bool), "k": torch.randn(2, 3)}
    moved = move_to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["rgbd"].is_contiguous(memory_format=torch.channels_last)
    assert not moved["rgbd"].is_contiguous()
    assert moved["mask"].is_contiguous() and moved["k"].is_contiguous()
    assert torch.equal(moved["rgbd"], batch["rgbd"])


def test_compiled_training_saves_plain_weights_and_resumes_bitwise(tmp_path: Path) -> None:
    extra = ["train.compile=eager"]  # the eager backend: the compile path without minutes of C++ compilation
    assert train(tmp_path / "reference", *extra) == 0
    names = list(final_state(tmp_path / "reference")["model"])
    assert names and not any(n.startswith(("_orig_mod.", "module.")) for n in names)
    run_dir = tmp_path / "run"
    assert train(run_dir, *extra, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    assert train(run_dir, *extra, "--resume", "auto") == 0
    assert_bitwise_equal(final_state(run_dir), final_state(tmp_path / "reference"))
    assert "torch.compile" in (run_dir / "train.log").read_text()
