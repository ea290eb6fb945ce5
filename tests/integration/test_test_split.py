"""``trainwell test``: a task's test split, scored once with a checkpoint, never seen in training; in every pack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainwell.cli import main
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.experiment import build_task, load_config

ROOT = Path(__file__).resolve().parents[2]
REGRESSION = str(ROOT / "configs/examples/regression.yaml")
SMALL = ["data.train_size=64", "train.batch_size=16", "train.epochs=1", "schedule.warmup_steps=0"]
SMALL += ["train.progress_bar=off"]


def test_trainwell_test_scores_the_test_split_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", REGRESSION, f"run.dir={run}", *SMALL, "data.test_size=37"]) == 0
    best = run / "checkpoints" / "best.pt"
    out = tmp_path / "test.json"
    capsys.readouterr()
    assert main(["test", REGRESSION, "--checkpoint", str(best), "--out", str(out), "data.test_size=37"]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["num_samples"] == 37
    printed = capsys.readouterr().out.splitlines()  # printed as `eval` prints: one `name: value` line per metric
    assert "Evaluated on 37 samples from all 1 processes" in printed  # each test sample once
    assert printed[-2:] == [f"{name}: {value:.4f}" for name, value in result["metrics"].items()]
    # Independent reference: the checkpoint's model on the test samples, mean squared error computed here.
    cfg = load_config(REGRESSION, ["data.test_size=37"])
    task = build_task(cfg)
    model = task.build_model().eval()
    model.load_state_dict(load_checkpoint(best)["model"])
    test, val = task.build_test_dataset(), task.build_datasets()[1]
    x = torch.stack([test[i]["x"] for i in range(len(test))])
    y = torch.stack([test[i]["y"] for i in range(len(test))])
    with torch.no_grad():
        expected = float(((model(x) - y) ** 2).mean())
    assert result["metrics"]["mse"] == pytest.approx(expected, rel=1e-5)
    assert not torch.equal(test[0]["x"], val[0]["x"])  # its own samples, not the validation set's


PACKS = [
    ("configs/hand_pose/tiny.yaml", ["data.test_size=16"]),
    ("configs/hand_pose/rgbd_tiny.yaml", ["data.test_size=4"]),
    ("configs/captioning/tiny.yaml", ["data.test_size=8"]),
    ("configs/detection3d/tiny.yaml", ["data.test_size=3"]),
]


@pytest.mark.parametrize(("config", "overrides"), PACKS)
def test_every_pack_has_a_test_split_of_its_own(config: str, overrides: list[str]) -> None:
    task = build_task(load_config(ROOT / config, overrides))
    test = task.build_test_dataset()
    _, val = task.build_datasets()
    size = int(overrides[0].split("=")[1])
    assert len(test) == size
    first_test, first_val = test[0], val[0]
    assert _differ(first_test, first_val), "the test split repeats the validation split"
    task.build_test_evaluator(test).reset()


def _differ(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return any(_differ(a[k], b[k]) for k in a if isinstance(b, dict) and k in b)  # type: ignore[index]
    if isinstance(a, torch.Tensor):
        return a.shape != b.shape or not torch.equal(a, b)  # type: ignore[union-attr]
    return a != b


def test_a_task_without_a_test_split_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    example = ROOT / "examples" / "viecap_style"
    import sys

    sys.path.insert(0, str(example))
    try:
        config = str(example / "config.yaml")
        args = ["train.epochs=1", "data.train_size=32", "data.val_size=8", "train.amp=off", "schedule.warmup_steps=0"]
        assert main(["train", config, f"run.dir={run}", "train.progress_bar=off", *args]) == 0
        code = main(["test", config, "--checkpoint", str(run / "checkpoints" / "last.pt"), *args])
    finally:
        sys.path.remove(str(example))
    err = capsys.readouterr().err
    assert code != 0 and "trainwell test needs" in err and "build_test_dataset()" in err and "Traceback" not in err
