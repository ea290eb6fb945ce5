"""``checkpoint.keep_best`` through the real ``trainwell train``: which files are kept, named for what, holding what,
and the same files after a kill and a resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from small_run import train
from test_resume import spawn

from trainwell.engine.checkpoint import BEST, load_checkpoint
from trainwell.engine.checkpoint.sharded import read_meta

# A large, unclipped learning rate: validation mse jumps around, so the best are not simply the newest.
TOP_K = ["eval.every=2", "checkpoint.keep_best=3", "optim.lr=0.3", "train.clip_grad_norm=null"]


def val_mse(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["mse"]) for r in map(json.loads, lines) if r["kind"] == "val"]


def expected_files(values: list[tuple[int, float]], k: int) -> list[str]:
    """The k lowest mse (ties: the earlier step), named as documented."""
    best = sorted(values, key=lambda sv: (sv[1], sv[0]))[:k]
    return sorted(f"best_step_{step:08d}_mse_{value:.4f}.pt" for step, value in best)


def kept(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("best_step_*.pt"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("top-k")
    assert train(run_dir, *TOP_K) == 0
    return run_dir


def test_the_k_best_are_kept_with_their_step_and_value(uninterrupted: Path) -> None:
    values = val_mse(uninterrupted)
    assert len(values) == 9  # every 2 of 18 steps
    names = kept(uninterrupted)
    assert names == expected_files(values, 3)
    newest = sorted(step for step, _ in values)[-3:]
    assert sorted(int(n.split("_")[2]) for n in names) != newest  # the test would catch "keep the newest"
    logged = dict(values)
    for name in names:
        state = load_checkpoint(uninterrupted / "checkpoints" / name)["train_state"]
        assert state["last_metrics"]["mse"] == logged[state["global_step"]]  # the checkpoint of that evaluation
        assert name.startswith(f"best_step_{state['global_step']:08d}_")
    best = load_checkpoint(uninterrupted / "checkpoints" / BEST)["train_state"]
    assert best["best_value"] == min(v for _, v in values)  # best.pt is still there, the best of all


def test_killed_run_resumes_to_the_same_top_k(tmp_path: Path, uninterrupted: Path) -> None:
    run_dir = tmp_path / "run"
    assert spawn(run_dir, TOP_K, {"kill_at_step": 11}) == -signal.SIGKILL
    assert train(run_dir, *TOP_K, "--resume", "auto") == 0  # the list is rebuilt from the files of steps ≤ 10
    assert kept(run_dir) == kept(uninterrupted)
    assert "not ranking" not in (run_dir / "train.log").read_text()


def test_keep_best_needs_a_best_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path / "x", "checkpoint.keep_best=2", "eval.best_metric=null") == 2
    assert "checkpoint.keep_best" in capsys.readouterr().err


def test_sharded_checkpoints_keep_the_same_k_best_as_directories(tmp_path: Path, uninterrupted: Path) -> None:
    run_dir = tmp_path / "sharded"
    assert train(run_dir, *TOP_K, "checkpoint.format=sharded") == 0
    checkpoints, values = run_dir / "checkpoints", val_mse(run_dir)
    names = sorted(p.name for p in checkpoints.glob("best_step_*"))
    assert names == [n.replace(".pt", ".dcp") for n in expected_files(values, 3)]
    assert [n.replace(".dcp", ".pt") for n in names] == kept(uninterrupted)  # same training, same ranking
    for name in names:  # each is a whole, verified checkpoint of its evaluation (read_meta checks every shard)
        state = read_meta(checkpoints / name)["train_state"]
        assert name.startswith(f"best_step_{state['global_step']:08d}_")
    # A resume with a smaller k ranks the directories again from their own metrics and drops the surplus.
    assert train(run_dir, *TOP_K[:1], "checkpoint.keep_best=1", "checkpoint.format=sharded", "--resume", "auto") == 0
    best = expected_files(values, 1)[0].replace(".pt", ".dcp")
    assert sorted(p.name for p in checkpoints.glob("best_step_*")) == [best]
