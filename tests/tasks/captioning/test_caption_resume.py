"""A bf16 captioning run resumed from a mid-epoch checkpoint ends with weights bitwise equal to an uninterrupted
run: the noise-injection and entity-masking draws come from the RNG streams the checkpoint restores."""

from pathlib import Path

import pytest
import torch

from trainwell.cli import main

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/captioning/tiny.yaml")
# 8 steps per epoch, 24 in all; a periodic checkpoint every 5 steps (step 10 is inside epoch 2).
ARGS = ["train.amp=bf16", "eval.every_epochs=0", "checkpoint.every=5", "checkpoint.keep=all", "data.train_size=256"]


@pytest.mark.slow
def test_resume_mid_epoch_under_bf16_is_bitwise(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert main(["train", CONFIG, *ARGS, f"run.dir={reference}"]) == 0
    middle = reference / "checkpoints" / "step_00000010.pt"
    assert middle.is_file()
    resumed = tmp_path / "resumed"
    assert main(["train", CONFIG, *ARGS, f"run.dir={resumed}", "--resume", str(middle)]) == 0
    want = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    got = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert "Resumed from" in (resumed / "train.log").read_text()
