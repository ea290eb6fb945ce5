"""examples/openpcdet_style/train.py runs (tiny sizes) and maps OpenPCDet's OPTIMIZATION block as documented."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "openpcdet_style" / "train.py"


def test_optimization_block_maps_onto_trainwell_settings() -> None:
    module = runpy.run_path(str(EXAMPLE), run_name="example")
    cfg = module["experiment"](module["OPTIMIZATION"], epochs=3, root=None, tiny=True)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 0.003, 0.01)
    assert (cfg.schedule.decay, cfg.schedule.pct_start, cfg.schedule.div_factor) == ("onecycle", 0.4, 10)
    assert cfg.schedule.onecycle_moms == [0.95, 0.85]
    assert cfg.train.clip_grad_norm == 10 and cfg.train.batch_size == 4


@pytest.mark.slow
def test_tiny_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--tiny", "--run-dir", str(tmp_path)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert "Car BEV AP_R40@0.5 (moderate)" in capsys.readouterr().out
    assert (tmp_path / "checkpoints").is_dir()
