"""``benchmarks/gpu_check.py`` on a CPU: its options, its hand-written baseline, its probe and its report.

The GPU parts (sync counting, CUDA eval) need a CUDA device; everything they are built from is tested here.
The end-to-end ``--device cpu --quick`` run is not part of the suite: on the contended 2-core development
machine it took 42 s for ``--packs regression --amp bf16`` and 211 s for both packs present and both
precisions (every check passed there except the speed ratio, which one short pair on a shared CPU cannot
measure).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
REGRESSION = "configs/examples/regression.yaml"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")
runs = _load("gpu_check_runs")


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # configs are named relative to the repository, as on the command line


# -- options ------------------------------------------------------------------------------------------
def test_options_defaults_quick_and_pack_selection() -> None:
    args = gpu_check.parse_args(["--device", "cpu"])
    assert (args.steps, args.repeats, args.amp) == (60, 3, ["bf16", "fp16"])
    assert args.pack_names == [p.name for p in gpu_check.PACKS]
    quick = gpu_check.parse_args(["--device", "cpu", "--quick", "--packs", "hand_pose_lifting, regression"])
    assert (quick.steps, quick.repeats) == (20, 1)
    assert quick.pack_names == ["regression", "hand_pose_lifting"]  # the table's order, not the option's
    assert gpu_check.parse_args(["--device", "cpu", "--set", "train.compile=true"]).set == ["train.compile=true"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu", "--packs", "regresion"], "unknown pack"),
        (["--device", "tpu"], "--device must be"),
        (["--device", "cpu", "--amp", "fp8"], "invalid choice"),
        (["--device", "cpu", "--set", "train.compile"], "KEY=VALUE"),
    ],
)
def test_bad_options_are_refused_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        gpu_check.parse_args(argv)
    assert message in capsys.readouterr().err


def test_cuda_without_a_cuda_build_points_to_the_header(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine that has CUDA
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--device", "cuda"])
    assert "sees no CUDA device" in capsys.readouterr().err


def test_missing_pack_configs_are_skipped_with_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = gpu_check.Pack("not_here", "configs/not_here/tiny.yaml")  # every real pack's config exists now
    monkeypatch.setattr(gpu_check, "PACKS", (*gpu_check.PACKS, absent))
    status = gpu_check.main(["--device", "cpu", "--packs", "not_here", "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "skipping not_here: configs/not_here/tiny.yaml does not exist" in out
    assert status == 1  # nothing was checked: not a pass


# -- the hand-written baseline --------------------------------------------------------------------------
def test_hand_written_loop_follows_trainwells_loss_trajectory(tmp_path: Path) -> None:
    # One full batch per epoch, constant LR, no dropout: the data order cannot matter, so both loops must
    # produce the same losses up to summation order (same seed, init, AdamW, clipping).
    keys = ["data.train_size=64", "train.batch_size=64", "train.epochs=4", "schedule.warmup_steps=0"]
    keys += ["schedule.decay=constant", "train.log_every=1", "eval.every_epochs=0", "train.progress_bar=off"]
    keys += ["checkpoint.every_epochs=0", "train.device=cpu"]
    cfg = runs.load_config(REGRESSION, [*keys, f"run.dir={tmp_path / 'run'}"])
    runs.Trainer(runs.build_run(cfg, runs.build_task(cfg))).fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    engine = [r["loss"] for r in rows if r["kind"] == "train"]
    hand = runs.hand_written_run(REGRESSION, keys, torch.device("cpu"), total_steps=4, window=(1, 4))
    assert len(engine) == len(hand.losses) == 4
    assert hand.losses == pytest.approx(engine, rel=1e-5)
    assert hand.losses[-1] < hand.losses[0]  # and it trains
    assert hand.steps == 3 and hand.steps_per_s > 0  # the window [1, 4) holds steps 1, 2, 3


def test_schedule_matches_the_documented_shape() -> None:
    f = [runs.lr_factor(s, 2, 10, "cosine", 0.1) for s in range(11)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0 and f[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(f[2:]))
    assert runs.lr_factor(6, 2, 10, "linear", 0.0) == pytest.approx(0.5)
    assert runs.lr_factor(7, 0, 10, "constant", 0.0) == 1.0


# -- the probe ------------------------------------------------------------------------------------------
def test_probe_window_counts_the_steps_between_its_bounds() -> None:
    probe = runs.StepProbe(torch.device("cpu"), 3, 6, count_syncs=True)
    assert probe.count_syncs is False  # no CUDA, nothing to count
    for _ in range(8):
        probe.on_step_start()
    assert probe.result.steps == 3 and probe.result.seconds > 0 and probe.result.syncs == 0
    with pytest.raises(ValueError, match="first < last"):
        runs.StepProbe(torch.device("cpu"), 4, 4, count_syncs=False)


def test_sync_warnings_are_counted_by_call_site() -> None:
    import warnings

    def record(message: str, line: int) -> warnings.WarningMessage:
        return warnings.WarningMessage(message, UserWarning, str(ROOT / "src" / "trainwell" / "x.py"), line)

    sync = "called a synchronizing CUDA operation"
    records = [record(sync, 10), record(sync, 10), record("some other warning", 3), record(sync, 42)]
    count, sites = runs.summarise_syncs(records)
    assert count == 3
    assert sites[0].endswith("x.py:10 ×2") and sites[1].endswith("x.py:42 ×1") and len(sites) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_probe_kills_its_process_when_the_step_starts() -> None:
    pid = os.fork()
    if pid == 0:  # child: steps 1 and 2 start; the second must never return
        probe = runs.StepProbe(torch.device("cpu"), 1, 2, count_syncs=False, kill_at=2)
        probe.on_step_start()
        probe.on_step_start()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_probe_wraps_only_the_task_instance() -> None:
    cfg = runs.load_config(REGRESSION, [])
    task, other = runs.build_task(cfg), runs.build_task(cfg)
    probe = runs.StepProbe(torch.device("cpu"), 1, 2, count_syncs=False)
    probe.install(task)
    model = task.build_model()
    batch = {"x": torch.zeros(2, 8), "y": torch.zeros(2, 2)}
    task.compute_losses(model, batch)
    other.compute_losses(model, batch)
    assert probe.calls == 1


# -- checks and report ------------------------------------------------------------------------------------
def test_bitwise_comparison_finds_one_flipped_bit_dtype_and_key_changes() -> None:
    a = {"model": {"w": torch.ones(3), "b": torch.zeros(2)}, "optimizer": {"state": [torch.ones(2)], "lr": 0.1}}
    assert gpu_check.tensors_equal(a, a) == []
    flipped = torch.ones(3)
    flipped.view(torch.int32)[1] ^= 1  # one ULP
    b = {"model": {"w": flipped, "b": torch.zeros(2)}, "optimizer": {"state": [torch.ones(2)], "lr": 0.1}}
    assert gpu_check.tensors_equal(a, b) == ["model.w"]
    c = {"model": {"w": torch.ones(3, dtype=torch.float64), "b": torch.zeros(2)}, "optimizer": a["optimizer"]}
    assert gpu_check.tensors_equal(a, c) == ["model.w"]
    assert gpu_check.tensors_equal(a, {"model": {"w": torch.ones(3)}, "optimizer": a["optimizer"]}) == ["model{keys}"]
    assert gpu_check.tensors_equal(a, {**a, "optimizer": {"state": [torch.ones(2)], "lr": 0.2}}) == ["optimizer.lr"]


def test_eval_comparison_uses_the_stated_tolerance() -> None:
    cpu = {"mpjpe": 10.0, "pa_mpjpe": 5.0}
    ok = gpu_check.compare_metrics({"mpjpe": 10.0 + 5e-3, "pa_mpjpe": 5.0}, cpu)
    assert ok["ok"] and ok["max_rel_diff"] == pytest.approx(5e-4)
    bad = gpu_check.compare_metrics({"mpjpe": 10.02, "pa_mpjpe": 5.0}, cpu)
    assert not bad["ok"] and bad["failing"] == ["mpjpe"]
    assert not gpu_check.compare_metrics({"mpjpe": 10.0}, cpu)["ok"]


def _result(ratio: float, syncs: int, resume_ok: bool) -> object:
    measure = {
        "amp": {
            "bf16": {
                "sync_check": {"steps": 15, "syncs": syncs, "sync_sites": ["src/x.py:10 ×15"] if syncs else []},
                "steps_per_s": 100.0 * ratio,
                "hand_steps_per_s": 100.0,
                "ratio": ratio,
                "peak_memory_mib": 12.5,
            }
        }
    }
    return gpu_check.PackResult(
        "regression", REGRESSION, measure=measure, resume={"ok": resume_ok}, eval={"ok": True, "max_rel_diff": 0.0}
    )


def test_rows_table_and_json_report_every_verdict(tmp_path: Path) -> None:
    good = gpu_check.build_rows([_result(1.01, 0, True)], "cuda")
    assert good[0]["ok"] and good[0]["syncs"] == 0
    slow_syncing = gpu_check.build_rows([_result(0.9, 15, False)], "cuda")
    assert not slow_syncing[0]["ok"]
    table = gpu_check.format_table(good + slow_syncing)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["pack", "amp", "steps/s"]
    assert "101.0" in lines[2] and "1.010" in lines[2] and "0/15" in lines[2] and "ok" in lines[2]
    assert "15/15" in lines[3] and "FAIL" in lines[3]
    assert "sync at src/x.py:10 ×15" in table
    cpu_rows = gpu_check.build_rows([_result(1.0, 0, True)], "cpu")
    assert cpu_rows[0]["syncs"] is None and "n/a" in gpu_check.format_table(cpu_rows)
    out = tmp_path / "r.json"
    gpu_check.write_json(out, {"rows": good, "nan": math.nan})
    loaded = json.loads(out.read_text())
    assert loaded["nan"] is None and loaded["rows"][0]["ratio"] == 1.01
