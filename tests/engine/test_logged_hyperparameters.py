"""The LR a log line reports is the LR its update used (OpenPCDet and ViECap log it that way), and β1 is logged when a
schedule moves it (OneCycle), per group where there are several."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainwell.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/examples/regression.yaml")
SHORT = ["data.train_size=64", "train.batch_size=16", "train.epochs=2", "train.log_every=1", "train.progress_bar=off"]


def _train_records(run_dir: Path, *overrides: str) -> list[dict]:
    assert main(["train", CONFIG, f"run.dir={run_dir}", *SHORT, *overrides]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_the_logged_lr_is_the_one_the_update_used(tmp_path: Path) -> None:
    # A 4-step linear warmup to 3e-3, then constant: update k (1-based) uses min(k / 4, 1) × 3e-3 (hand-computed).
    records = _train_records(tmp_path, "schedule.warmup_steps=4", "schedule.decay=constant")
    assert [r["step"] for r in records] == list(range(1, 9))
    for record in records:
        assert record["lr"] == pytest.approx(3e-3 * min(record["step"] / 4, 1.0), rel=1e-12), record["step"]
    assert "momentum" not in records[0]  # a schedule that leaves β1 alone does not log it


def test_onecycle_logs_the_beta1_each_update_used(tmp_path: Path) -> None:
    # OneCycle over 8 steps, pct_start 0.5: update k (0-based index t = k - 1) rises for t < 4. Re-expressed here:
    # lr = anneal(lr/div, lr, t/4), β1 = anneal(0.95, 0.85, t/4), anneal(a, b, p) = b + (a-b)(cos πp + 1)/2.
    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    records = _train_records(tmp_path, "schedule.decay=onecycle", "schedule.pct_start=0.5", "schedule.div_factor=10")
    for record in records[:4]:
        t = record["step"] - 1
        assert record["lr"] == pytest.approx(anneal(3e-4, 3e-3, t / 4), rel=1e-12)
        assert record["momentum"] == pytest.approx(anneal(0.95, 0.85, t / 4), rel=1e-12)
    assert records[0]["momentum"] == pytest.approx(0.95)


def test_with_several_param_groups_each_groups_lr_and_beta1_are_logged(tmp_path: Path) -> None:
    from trainwell import Trainer, build_run
    from trainwell.config.schema import ParamGroupConfig
    from trainwell.experiment import build_task, load_config

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    overrides = [*SHORT, f"run.dir={tmp_path}", "schedule.decay=onecycle", "schedule.pct_start=0.5"]
    cfg = load_config(CONFIG, [*overrides, "schedule.div_factor=10", "optim.no_decay_norm_bias=false"])
    cfg.optim.param_groups = [ParamGroupConfig(match="0.*", name="first", lr_mult=0.1)]
    Trainer(build_run(cfg, build_task(cfg))).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    assert {k for k in records[0] if k.startswith(("lr", "momentum"))} == {
        "lr",
        "lr/first",
        "lr/default",
        "momentum",
        "momentum/first",
        "momentum/default",
    }
    for record in records[:4]:  # the rising half, as above; the group's LR scaled by its lr_mult, β1 shared
        t = record["step"] - 1
        assert record["lr/default"] == pytest.approx(anneal(3e-4, 3e-3, t / 4), rel=1e-12)
        assert record["lr/first"] == pytest.approx(0.1 * anneal(3e-4, 3e-3, t / 4), rel=1e-12)
        for name in ("momentum/first", "momentum/default"):
            assert record[name] == pytest.approx(anneal(0.95, 0.85, t / 4), rel=1e-12)
