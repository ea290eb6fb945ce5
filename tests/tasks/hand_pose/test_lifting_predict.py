"""``trainwell predict`` for the 2D→3D lifting task: the README's example runs, its output is the model's, and bad
input files are refused by file, object index and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainwell.cli import main
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.experiment import build_task, load_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/hand_pose/tiny.yaml")
SHORT = [
    "train.epochs=1",
    "data.train_size=256",
    "data.val_size=32",
    "schedule.warmup_steps=0",
    "train.progress_bar=off",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("lifting")
    assert main(["train", CONFIG, f"run.dir={run}", *SHORT]) == 0
    return run / "checkpoints" / "last.pt"


def test_predict_gives_the_models_joints_for_each_object(checkpoint: Path, tmp_path: Path) -> None:
    task = build_task(load_config(CONFIG, SHORT))
    val = task.build_datasets()[1]
    samples = [val[i] for i in range(3)]
    objects = [
        {"keypoints_2d_px": s["keypoints_2d_px"].tolist(), "intrinsics": s["intrinsics"].tolist()} for s in samples
    ]
    objects[1]["visibility"] = samples[1]["visibility"].tolist()
    source = tmp_path / "hands.json"
    source.write_text(json.dumps(objects))
    out = tmp_path / "out"
    assert main(["predict", CONFIG, "--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out)]) == 0
    predicted = json.loads((out / "predictions.json").read_text())
    # Reference: the checkpoint's model called directly on the same inputs (visibility 1 where the file has none).
    model = task.build_model().eval()
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    kp = torch.stack([s["keypoints_2d_px"] for s in samples])
    vis = torch.stack([torch.ones(21), samples[1]["visibility"], torch.ones(21)])
    intr = torch.stack([s["intrinsics"] for s in samples])
    with torch.no_grad():
        expected = model(kp, vis, intr)["joints_mm"]
    assert len(predicted) == 3
    assert torch.allclose(torch.tensor([p["joints_rel_mm"] for p in predicted]), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"keypoints_2d_px": [[0, 0]] * 20, "intrinsics": [[500, 0, 128], [0, 500, 128], [0, 0, 1]]}, "shape 20×2"),
        ([{"keypoints_2d_px": [[0, 0]] * 21}], "object 0: missing 'intrinsics'"),
        ({"keypoints_2d_px": [[0, 0]] * 21, "intrinsics": [[0, 0, 0]] * 3}, "positive focal lengths"),
        ({"keypoints_2d_px": [[0, 0]] * 21, "intrinsic": [[1, 0, 0]] * 3}, "unknown key(s) ['intrinsic']"),
    ],
)
def test_bad_input_is_refused_by_file_object_and_key(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, content: object, named: str
) -> None:
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(content))
    assert main(["predict", CONFIG, "--checkpoint", str(checkpoint), "--input", str(source)]) != 0
    err = capsys.readouterr().err
    assert str(source) in err and named in err and "Traceback" not in err


def _docs_example() -> dict:
    """The JSON example of docs/hand_pose.md's "Predict" section."""
    text = (ROOT / "docs" / "hand_pose.md").read_text().split("## Predict", 1)[1].split("\n## ", 1)[0]
    return json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])


def test_the_documented_example_runs_and_invisible_joints_are_ignored(checkpoint: Path, tmp_path: Path) -> None:
    example = _docs_example()
    assert sorted(example) == ["intrinsics", "keypoints_2d_px", "visibility"]
    hidden = [i for i, v in enumerate(example["visibility"]) if v == 0]
    assert hidden == [4, 14, 16]
    moved = json.loads(json.dumps(example))
    for i in hidden:
        moved["keypoints_2d_px"][i] = [999.0, -999.0]  # "ignored whatever its coordinates"
    outputs = []
    for name, content in (("doc.json", example), ("moved.json", [moved])):
        source, out = tmp_path / name, tmp_path / f"out-{name}"
        source.write_text(json.dumps(content))
        args = ["predict", CONFIG, "--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out)]
        assert main(args) == 0
        outputs.append(json.loads((out / "predictions.json").read_text()))
    assert len(outputs[0]) == 1 and torch.tensor(outputs[0][0]["joints_rel_mm"]).shape == (21, 3)
    assert outputs[0] == outputs[1]
    # Reference: the model called directly on the documented numbers.
    task = build_task(load_config(CONFIG, SHORT))
    model = task.build_model().eval()
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    inputs = [torch.tensor([example[k]], dtype=torch.float32) for k in ("keypoints_2d_px", "visibility", "intrinsics")]
    with torch.no_grad():
        expected = model(*inputs)["joints_mm"][0]
    assert torch.allclose(torch.tensor(outputs[0][0]["joints_rel_mm"]), expected, atol=1e-4)
