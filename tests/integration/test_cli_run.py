"""A short real run through the CLI: outputs, log lines, metrics records, and `trainwell eval`."""

import json
import re
from pathlib import Path

import pytest

from trainwell.cli import main
from trainwell.records.metrics import read_metrics

CONFIG = "configs/examples/regression.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    assert main(["train", CONFIG, f"run.dir={path}", "train.epochs=2", "train.log_every=4"]) == 0
    return path


def test_run_directory_layout(run_dir: Path) -> None:
    for name in ["config.yaml", "train.log", "metrics.jsonl", "tb", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_loss_breakdown_lines(run_dir: Path) -> None:
    log = (run_dir / "train.log").read_text()
    lines = [line for line in log.splitlines() if re.search(r"epoch \d+ step \d+ ", line)]
    assert len(lines) == 32 // 4  # 16 steps per epoch, 2 epochs, a line every 4 steps
    for line in lines:
        assert re.search(r"loss [\d.]+ \| mse [\d.e+-]+ l1 [\d.e+-]+ \| lr [\d.]+e[+-]\d+ \| grad_norm ", line), line
    assert re.search(r"Epoch 2/2 \| train loss [\d.]+ \| val mse [\d.]+, mae [\d.]+ \| LR = \d\.\d\de-\d\d", log)
    assert "Evaluated on 101 samples from all 1 processes" in log
    assert "trainwell run 'regression'" in log and "Finished run 'regression'" in log


def test_metrics_jsonl_records(run_dir: Path) -> None:
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(4, 33, 4))
    for record in train:
        assert {"epoch", "step", "loss", "loss/mse", "loss/l1", "lr", "grad_norm", "clip_rate"} <= set(record)
        assert record["loss"] == pytest.approx(record["loss/mse"] + record["loss/l1"])
    assert [(r["epoch"], r["step"]) for r in val] == [(1, 16), (2, 32)]
    assert all({"mse", "mae", "num_samples"} <= set(r) for r in val)
    assert val[1]["mse"] < val[0]["mse"]  # it trains


def test_zero_weighted_component_is_omitted(tmp_path: Path) -> None:
    assert main(["train", CONFIG, f"run.dir={tmp_path}", "train.epochs=1", "task.loss_weights.l1=0"]) == 0
    log = (tmp_path / "train.log").read_text()
    assert " mse " in log and " l1 " not in log


def test_eval_reproduces_best_metrics(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    best = run_dir / "checkpoints" / "best.pt"
    assert main(["eval", CONFIG, "--checkpoint", str(best), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 101 and result["world_size"] == 1 and result["checkpoint"] == str(best)
    val = read_metrics(run_dir / "metrics.jsonl")
    best_val = min((r for r in val if r["kind"] == "val"), key=lambda r: r["mse"])
    assert result["metrics"]["mse"] == pytest.approx(best_val["mse"], rel=1e-9)


def test_second_run_gets_its_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / CONFIG
    for _ in range(2):
        assert main(["train", str(config), "train.epochs=1", "run.name=twice"]) == 0
    runs = sorted((tmp_path / "runs" / "twice").iterdir())
    assert len(runs) == 2 and all((r / "train.log").exists() for r in runs)
