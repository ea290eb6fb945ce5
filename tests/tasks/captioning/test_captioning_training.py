"""End to end through the engine's Python API: the tiny captioning config trains, the loss falls, the evaluation
reports every caption metric and writes captions.json, `trainwell eval` reproduces best.pt's scores and `trainwell
predict` captions a JSON file. (bf16 runs in test_caption_resume.py.)"""

import json
from pathlib import Path

import pytest

from trainwell import Trainer, build_run, load_config
from trainwell.cli import main
from trainwell.experiment import build_task
from trainwell.records.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]
METRICS = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d", "entity_recall"}


def fit(run_dir: Path, *overrides: str):
    cfg = load_config(ROOT / "configs/captioning/tiny.yaml", [f"run.dir={run_dir}", *overrides])
    return Trainer(build_run(cfg, build_task(cfg))).fit()


@pytest.mark.slow
def test_tiny_config_trains_and_the_loss_falls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = fit(tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    epochs = load_config(ROOT / "configs/captioning/tiny.yaml").train.epochs
    assert len(val) == epochs and all(set(r) >= METRICS for r in val)  # one evaluation per epoch
    assert train[-1]["loss"] < 0.75 * train[0]["loss"], (train[0]["loss"], train[-1]["loss"])
    assert val[-1]["bleu_1"] > val[0]["bleu_1"] or val[-1]["cider_d"] > val[0]["cider_d"]
    assert set(result.metrics) >= METRICS
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert best.is_file() and (tmp_path / "run" / "tokenizer.json").is_file()
    captions = json.loads((tmp_path / "run" / "predictions" / "captions.json").read_text())
    assert [row["image_id"] for row in captions] == list(range(32)) and all("caption" in row for row in captions)

    # `trainwell eval` of best.pt reproduces the best epoch's scores; `trainwell predict` captions a JSON file
    config = str(ROOT / "configs/captioning/tiny.yaml")
    exported = tmp_path / "exported"
    command = [
        "eval",
        config,
        "--checkpoint",
        str(best),
        "--out",
        str(tmp_path / "eval.json"),
        "--export",
        str(exported),
    ]
    assert main(command) == 0
    best_captions = json.loads((exported / "captions.json").read_text())
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    evaluated = evaluated.get("metrics", evaluated)
    best_val = max(val, key=lambda r: r["cider_d"])
    for name in METRICS:
        assert evaluated[name] == pytest.approx(best_val[name], rel=1e-9, abs=1e-12), name
    task = build_task(load_config(config))
    record = task.records("val")[0]
    item = {"features": record.features.astype(float).tolist(), "entities": list(record.detected)}
    (tmp_path / "in.json").write_text(json.dumps(item))
    out = tmp_path / "predicted"
    assert (
        main(["predict", config, "--checkpoint", str(best), "--input", str(tmp_path / "in.json"), "--out", str(out)])
        == 0
    )
    predicted = json.loads((out / "captions.json").read_text())
    assert predicted == [{"image_id": 0, "caption": best_captions[0]["caption"]}]

    # Inputs the model cannot take: one line naming the file and item, exit 1, no traceback, nothing written.
    bad = {"short.json": '{"features": [1, 2, 3]}', "ragged.json": '{"features": [[1, 2], [3]]}', "broken.json": "{"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        command = ["predict", config, "--checkpoint", str(best), "--input", str(tmp_path / name)]
        assert main([*command, "--out", str(tmp_path / f"out-{name}")]) == 1, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and name in err and err.startswith("trainwell: data error:"), err
        assert not (tmp_path / f"out-{name}").exists()
