"""Kill a real run at several points, resume it, and get bitwise the weights of an uninterrupted run.

The killed runs are subprocesses that SIGKILL themselves at a chosen optimizer step, or half-way through
writing a checkpoint (test-side seams in ``small_run.py``: a step callback, a substituted checkpoint writer), so the
crash point is exact and the test does not race the run.
The reference and the resumed runs execute in this process (cheaper: no interpreter start-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from small_run import CONFIG, ROOT, SMALL, SignalAtStep, train

from trainwell.api import build_run
from trainwell.cli import main
from trainwell.engine.checkpoint import BEST, LAST, atomic_save, load_checkpoint
from trainwell.engine.loop import Trainer
from trainwell.engine.resuming import init_from
from trainwell.experiment import build_task, load_config

_TIMING = {"steps_per_s", "data_wait_share"}


def spawn(run_dir: Path, extra: list[str], hooks: dict[str, int]) -> int:
    """A real ``trainwell train`` process; output goes to a file (DataLoader workers outlive a SIGKILL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run_dir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).with_name("small_run.py"))
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as out:
        command = [sys.executable, script, json.dumps(hooks), "train", CONFIG, *SMALL, f"run.dir={run_dir}", *extra]
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, timeout=120).returncode


def final_state(run_dir: Path) -> dict[str, Any]:
    payload = load_checkpoint(run_dir / "checkpoints" / LAST)
    step = {k: v for k, v in payload["train_state"].items() if k != "elapsed_s"}  # wall-clock: never bitwise
    return {"model": payload["model"], "optimizer": payload["optimizer"]["state"], "step": step}


def assert_bitwise_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, where


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Train and val records of metrics.jsonl without the timing fields."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    out = []
    for record in map(json.loads, lines):
        if record["kind"] in ("train", "val"):
            out.append({k: v for k, v in record.items() if k not in _TIMING})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, fp32 and bf16."""
    runs = {}
    for amp in ("off", "bf16"):
        run_dir = tmp_path_factory.mktemp(f"reference-{amp}")
        assert train(run_dir, f"train.amp={amp}") == 0
        runs[amp] = run_dir
    return runs


def test_reference_run_keeps_best_last_and_the_newest_periodic_files(reference: dict[str, Path]) -> None:
    names = sorted(p.name for p in (reference["off"] / "checkpoints").iterdir())
    assert names == [BEST, "epoch_0002.pt", "epoch_0003.pt", LAST]


@pytest.mark.parametrize(
    ("extra", "hooks"),
    [
        pytest.param([], {"kill_at_step": 11}, id="inside-epoch-2"),
        pytest.param([], {"kill_at_step": 7}, id="just-after-epoch-1"),
        pytest.param([], {"kill_in_save": 5}, id="half-way-through-a-save"),
        pytest.param(["data.num_workers=2"], {"kill_at_step": 15}, id="two-workers-inside-epoch-3"),
        pytest.param(["train.amp=bf16"], {"kill_at_step": 11}, id="bf16-inside-epoch-2"),
    ],
)
def test_killed_run_resumes_to_bitwise_equal_weights(
    tmp_path: Path, reference: dict[str, Path], extra: list[str], hooks: dict[str, int]
) -> None:
    run_dir = tmp_path / "run"
    assert spawn(run_dir, extra, hooks) == -signal.SIGKILL
    checkpoints = run_dir / "checkpoints"
    torn = list(checkpoints.glob(".*.tmp-*"))
    if "kill_in_save" in hooks:
        assert len(torn) == 1 and torn[0].stat().st_size > 0  # the process really died mid-write
    assert load_checkpoint(checkpoints / LAST)["train_state"]["global_step"] > 0

    assert train(run_dir, *extra, "--resume", "auto") == 0

    assert not list(checkpoints.glob(".*.tmp-*"))
    expected = reference["bf16" if "train.amp=bf16" in extra else "off"]
    assert_bitwise_equal(final_state(run_dir), final_state(expected))
    # Every train/val record once, with the values of the uninterrupted run (loss meters restored).
    assert records(run_dir) == records(expected)
    assert "Resumed from" in (run_dir / "train.log").read_text()


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_without_its_old_records(
    tmp_path: Path, reference: dict[str, Path]
) -> None:
    run_dir = tmp_path / "run"
    assert spawn(run_dir, [], {"kill_at_step": 3}) == -signal.SIGKILL  # step 2 logged, the first last.pt is step 4
    assert not list((run_dir / "checkpoints").glob("*.pt"))
    assert [r["step"] for r in records(run_dir)] == [2]

    assert train(run_dir, "--resume", "auto") == 0
    assert "no checkpoint in" in (run_dir / "train.log").read_text()
    assert records(run_dir) == records(reference["off"])  # step 2 once, not the killed attempt's copy too
    assert_bitwise_equal(final_state(run_dir), final_state(reference["off"]))


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, reference: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 128 + signal.SIGTERM
    last = run_dir / "checkpoints" / LAST
    assert load_checkpoint(last)["train_state"]["global_step"] == 9
    with open(last, "r+b") as handle:
        handle.truncate(last.stat().st_size - 100)

    assert train(run_dir, "--resume", "auto") == 0

    log = (run_dir / "train.log").read_text()
    assert f"Skipping checkpoint '{last}'" in log and "truncated or damaged" in log
    assert f"Resumed from '{run_dir / 'checkpoints'}/epoch_0001.pt' at the end of epoch 1, step 6" in log
    assert_bitwise_equal(final_state(run_dir), final_state(reference["off"]))


def test_resumed_run_replaces_best_only_with_a_better_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = {}
    for case in ("unbeatable", "control"):
        run_dir = tmp_path / case
        assert train(run_dir, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 128 + signal.SIGTERM
        runs[case] = run_dir
    # Pretend the interrupted run had already reached an mse no later epoch can beat.
    last = runs["unbeatable"] / "checkpoints" / LAST
    payload = load_checkpoint(last)
    payload["train_state"]["best_value"] = 1e-12
    atomic_save(payload, last)

    for case, run_dir in runs.items():
        best = run_dir / "checkpoints" / BEST
        before = (best.stat().st_ino, best.read_bytes())
        assert train(run_dir, "--resume", "auto") == 0
        resumed_log = (run_dir / "train.log").read_text().split("Resumed from")[1]
        if case == "unbeatable":
            assert (best.stat().st_ino, best.read_bytes()) == before
            assert "Saved best model" not in resumed_log
            assert "Best mse (min) = 1.000e-12 at epoch 1" in resumed_log
        else:  # the same run with its true best does improve after the resume
            assert best.read_bytes() != before[1]
            assert "Saved best model (mse (min) = " in resumed_log


def test_resume_auto_without_checkpoint_starts_afresh_and_needs_a_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", CONFIG, *SMALL, "--resume", "auto"]) == 2
    assert "--resume auto continues the run in run.dir" in capsys.readouterr().err
    assert train(tmp_path / "fresh", "train.epochs=1", "--resume", "auto") == 0
    assert "no checkpoint in" in (tmp_path / "fresh" / "train.log").read_text()


def test_init_from_loads_model_weights_only_and_reports_mismatches(
    tmp_path: Path, reference: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = reference["off"] / "checkpoints" / LAST
    cfg = load_config(CONFIG, SMALL)
    trainer = Trainer(build_run(cfg, build_task(cfg), write_outputs=False))
    assert init_from(trainer.run, source).is_exact
    assert_bitwise_equal(trainer.run.model.state_dict(), load_checkpoint(source)["model"])
    assert trainer.run.state.global_step == 0 and not trainer.run.optimizer.state  # weights only

    narrow = ["task.hidden=8", "train.epochs=1"]
    assert train(tmp_path / "strict", *narrow, "--init-from", str(source)) == 1
    err = capsys.readouterr().err
    assert "1 of 6 model tensors loaded" in err and "0.weight (checkpoint (16, 8) vs model (8, 8))" in err
    assert "--init-from-non-strict" in err

    assert train(tmp_path / "lenient", *narrow, "--init-from", str(source), "--init-from-non-strict") == 0
    log = (tmp_path / "lenient" / "train.log").read_text()
    assert "Initialised the model: 1 of 6 model tensors loaded" in log and "shape mismatch: 0.weight" in log


def _as_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint as trainwell 0.1 wrote it before the engine redesign (no ``format``; state spread out)."""
    state = dict(payload["train_state"])
    rule = state.pop("best_rule")
    old = {k: v for k, v in payload.items() if k not in ("format", "checksum")}
    metric, mode = (rule.rsplit(" (", 1)[0], rule.rsplit(" (", 1)[1].rstrip(")")) if rule else (None, "min")
    old["train_state"] = {
        **{k: state[k] for k in ("epoch", "global_step", "batch_in_epoch", "best_value", "best_epoch")},
        "best_metric": metric,
        "best_mode": mode,
    }
    old["data"], old["metrics"] = state["data_layout"], state["last_metrics"]
    old["meters"] = {"loss": payload["meters"]}
    return old


def test_a_checkpoint_of_the_previous_format_resumes_bitwise(tmp_path: Path, reference: dict[str, Path]) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    last = run_dir / "checkpoints" / LAST
    atomic_save(_as_format_1(load_checkpoint(last)), last)
    assert "format" not in load_checkpoint(last)
    assert train(run_dir, "--resume", "auto") == 0
    assert_bitwise_equal(final_state(run_dir), final_state(reference["off"]))


def test_a_checkpoint_of_a_newer_format_is_refused_with_the_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    last = run_dir / "checkpoints" / LAST
    payload = load_checkpoint(last)
    payload["format"], payload["versions"]["trainwell"] = 7, "9.9.9"
    atomic_save(payload, last)
    assert train(run_dir, "--resume", str(last)) == 1
    err = capsys.readouterr().err
    assert "checkpoint format 7 is newer than this trainwell reads (2)" in err and "trainwell 9.9.9" in err
