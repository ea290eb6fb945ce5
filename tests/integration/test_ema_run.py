"""``train.ema`` through the real ``trainwell train``: the average against one computed here from the weights recorded
after every step, bitwise resume, ``eval.use_ema`` and ``trainwell export --ema``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from small_run import train
from test_resume import assert_bitwise_equal, spawn

from trainwell.cli import main
from trainwell.engine.checkpoint import LAST, load_checkpoint
from trainwell.records.metrics import read_metrics

EMA = ["train.ema.decay=0.8", "train.ema.every=2", "train.ema.start_step=3"]


class RecordWeights:
    """Copies the model's weights after every optimizer step."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, run: Any) -> None:
        state = run.model.state_dict()
        self.weights[run.state.global_step] = {k: v.detach().clone() for k, v in state.items()}


def reference_ema(weights: dict[int, dict[str, torch.Tensor]], *, decay: float, every: int, start: int, last: int):
    """The plain definition, step by step: a copy at ``start``, then ``decay·ema + (1 − decay)·w`` every ``every``."""
    ema = {k: v.double().clone() for k, v in weights[start].items()}
    for step in range(start + every, last + 1, every):
        ema = {k: decay * ema[k] + (1.0 - decay) * weights[step][k].double() for k in ema}
    return ema


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RecordWeights]:
    run_dir = tmp_path_factory.mktemp("ema")
    recorder = RecordWeights()
    assert train(run_dir, *EMA, callbacks=(recorder,)) == 0
    return run_dir, recorder


def test_ema_equals_the_average_of_the_recorded_weights(ema_run: tuple[Path, RecordWeights]) -> None:
    run_dir, recorder = ema_run
    payload = load_checkpoint(run_dir / "checkpoints" / LAST)
    last_step = payload["train_state"]["global_step"]
    assert last_step == 18 and sorted(recorder.weights) == list(range(1, 19))
    part = payload["ema"]
    assert part["started_at"] == 3 and part["num_updates"] == len(range(5, 19, 2))
    expected = reference_ema(recorder.weights, decay=0.8, every=2, start=3, last=last_step)
    for name, tensor in part["model"].items():
        assert torch.allclose(tensor.double(), expected[name], rtol=1e-6, atol=1e-7), name
        # The average is not the last weights (the test would pass on a plain copy otherwise).
        assert not torch.allclose(tensor, payload["model"][name], rtol=1e-4, atol=1e-6), name


def test_killed_run_resumes_to_bitwise_equal_ema(tmp_path: Path, ema_run: tuple[Path, RecordWeights]) -> None:
    reference, _ = ema_run
    run_dir = tmp_path / "run"
    assert spawn(run_dir, EMA, {"kill_at_step": 11}) == -signal.SIGKILL
    saved = load_checkpoint(run_dir / "checkpoints" / LAST)
    assert saved["ema"]["num_updates"] == 2  # steps 5 and 7 (last.pt of step 8)
    assert train(run_dir, *EMA, "--resume", "auto") == 0
    resumed, uninterrupted = (load_checkpoint(r / "checkpoints" / LAST) for r in (run_dir, reference))
    assert_bitwise_equal(resumed["ema"], uninterrupted["ema"], "ema")
    assert_bitwise_equal(resumed["model"], uninterrupted["model"], "model")


def test_use_ema_evaluates_the_average_and_export_writes_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, *EMA, "eval.use_ema=true", "train.epochs=2") == 0
    last = run_dir / "checkpoints" / LAST
    payload = load_checkpoint(last)
    logged = read_metrics(run_dir / "metrics.jsonl")
    val = [r for r in logged if r["kind"] == "val"][-1]

    scores = {}
    for use_ema in ("true", "false"):
        out = tmp_path / f"eval-{use_ema}.json"
        args = ["eval", "configs/examples/regression.yaml", "--checkpoint", str(last), "--out", str(out)]
        assert main([*args, *_small_overrides(), f"eval.use_ema={use_ema}", *EMA]) == 0
        scores[use_ema] = json.loads(out.read_text())["metrics"]["mse"]
    assert scores["true"] == pytest.approx(val["mse"], rel=1e-6)  # validation scored the EMA weights
    assert scores["false"] != pytest.approx(val["mse"], rel=1e-4)

    exported = tmp_path / "ema.pt"
    assert main(["export", str(last), "--out", str(exported), "--ema"]) == 0
    assert_bitwise_equal(torch.load(exported, weights_only=True), payload["ema"]["model"], "export")
    assert json.loads((tmp_path / "ema.pt.json").read_text())["weights"] == "ema"


def test_export_ema_of_a_run_without_ema_is_a_clear_error(
    tmp_path: Path, ema_run: tuple[Path, RecordWeights], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "plain"
    assert train(run_dir, "train.epochs=1") == 0
    assert main(["export", str(run_dir / "checkpoints" / LAST), "--out", str(tmp_path / "x.pt"), "--ema"]) == 1
    assert "holds no EMA weights (it was written without train.ema)" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def _small_overrides() -> list[str]:
    from small_run import SMALL

    return SMALL
