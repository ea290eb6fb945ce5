"""``train.profile``: the profiler records the asked-for steps into the run directory and logs the top operators."""

from __future__ import annotations

import json
from pathlib import Path

from trainwell.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/examples/regression.yaml")
SMALL = ["data.train_size=128", "train.batch_size=16", "train.epochs=1", "train.progress_bar=off"]


def test_profile_writes_traces_and_logs_the_top_operators(tmp_path: Path) -> None:
    profile = ["train.profile.wait=1", "train.profile.warmup=1", "train.profile.active=2"]
    assert main(["train", CONFIG, f"run.dir={tmp_path}", *SMALL, *profile]) == 0
    traces = list((tmp_path / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1  # one window, in the TensorBoard profiler plugin's format
    chrome = json.loads((tmp_path / "profile" / "trace.json").read_text())
    names = {event.get("name") for event in chrome["traceEvents"]}
    assert "ProfilerStep#2" in names and "ProfilerStep#3" in names  # the two active steps (after wait + warmup)
    assert "ProfilerStep#1" not in names  # the warmup step is not recorded
    assert any(str(n).startswith("aten::addmm") or str(n).startswith("aten::linear") for n in names)
    log = (tmp_path / "train.log").read_text()
    assert "profile: top 15 operators of 2 steps by self time" in log and "Self CPU" in log


def test_a_run_shorter_than_the_window_says_so(tmp_path: Path) -> None:
    profile = ["train.profile.wait=1", "train.profile.warmup=1", "train.profile.active=50"]
    assert main(["train", CONFIG, f"run.dir={tmp_path}", *SMALL, *profile]) == 0
    assert (
        "profile: the run ended after 8 of the 52 steps train.profile asked for" in (tmp_path / "train.log").read_text()
    )
