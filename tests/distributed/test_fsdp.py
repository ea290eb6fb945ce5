"""``distributed.strategy=fsdp`` (FSDP2) on 2 gloo processes: the same weights as DDP on 2 processes and as one
process at the same global batch, with gradient clipping and accumulation on; and a resume from an FSDP checkpoint
that continues exactly.

Every run goes through the CLI's ``main`` (the spawned processes get the variables torchrun would set), so this
covers sharding, the full-state checkpoint parts, evaluation of a sharded model and the resume path together.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main
from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig

CONFIG = str(REPO / "configs/examples/regression.yaml")
GLOBAL_BATCH = 32
ACCUM = 2  # two micro-batches per step: FSDP's gradient sync is paused on the first (set_requires_gradient_sync)
# Dropout 0: masks are drawn per rank. clip_grad_norm=0.05 is far below the gradient norm (~1), so every step is
# clipped and a norm measured on one shard only would show in the weights.
COMMON = [
    "train.epochs=1",
    "train.max_steps=6",
    "train.log_every=2",
    f"train.grad_accum_steps={ACCUM}",
    "train.clip_grad_norm=0.05",
    "task.dropout=0",
    "train.device=cpu",
    "checkpoint.every=3",
    "checkpoint.keep=all",
    "checkpoint.format=single",  # the gathered full state (sharded checkpoints: test_sharded_checkpoints.py)
]
# Float32 sums taken in another order differ in the last bits (~1e-7 relative): DDP all-reduces whole gradients,
# FSDP reduce-scatters shards, one process sums the batch in one go; six Adam steps keep that at the 1e-7 level.
TOLERANCE = 1e-6


def _train(rank: int, world_size: int, run_dir: Path, strategy: str, extra: tuple[str, ...] = ()) -> None:
    batch = GLOBAL_BATCH // world_size
    args = [f"run.dir={run_dir}", f"train.batch_size={batch}", f"distributed.strategy={strategy}", *COMMON]
    assert main(["train", CONFIG, *args, *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("one", "ddp", "fsdp", "resumed")}
    _train(0, 1, dirs["one"], "ddp")
    spawn(_train, 2, dirs["ddp"], "ddp", init_group=False)
    spawn(_train, 2, dirs["fsdp"], "fsdp", init_group=False)
    resume = ("--resume", str(dirs["fsdp"] / "checkpoints/step_00000003.pt"))
    spawn(_train, 2, dirs["resumed"], "fsdp", resume, init_group=False)
    return dirs


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_fsdp_ddp_and_one_process_reach_the_same_weights(runs: dict[str, Path]) -> None:
    one, ddp, fsdp = _last(runs["one"]), _last(runs["ddp"]), _last(runs["fsdp"])
    assert one["train_state"]["global_step"] == fsdp["train_state"]["global_step"] == 6
    for name, weight in one["model"].items():
        assert not isinstance(fsdp["model"][name], torch.distributed.tensor.DTensor)  # a full, plain tensor
        torch.testing.assert_close(ddp["model"][name], weight, rtol=0, atol=TOLERANCE, msg=name)
        torch.testing.assert_close(fsdp["model"][name], weight, rtol=0, atol=TOLERANCE, msg=name)
    # The weights did move (six clipped AdamW steps), so the comparison means something.
    torch.manual_seed(0)  # what the Trainer does (train.seed=0) before building the model
    initial = RegressionTask(RegressionTaskConfig(hidden=64), RegressionDataConfig()).build_model().state_dict()
    assert max(float((one["model"][n] - v).abs().max()) for n, v in initial.items()) > 1e-3


def test_optimizer_state_is_saved_whole_in_the_ddp_layout(runs: dict[str, Path]) -> None:
    one, fsdp = _last(runs["one"])["optimizer"], _last(runs["fsdp"])["optimizer"]
    assert fsdp["param_groups"] == one["param_groups"]
    assert sorted(fsdp["state"]) == sorted(one["state"])
    for key, state in one["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(fsdp["state"][key][name], value, rtol=1e-4, atol=1e-7, msg=f"{key}.{name}")


def test_the_logged_grad_norm_is_the_whole_gradients(runs: dict[str, Path]) -> None:
    # The norm of one shard only would be about 1/sqrt(2) of the whole; all three runs log the same norm.
    one, fsdp = _records(runs["one"], "train"), _records(runs["fsdp"], "train")
    assert [r["step"] for r in fsdp] == [r["step"] for r in one] == [2, 4, 6]
    for a, b in zip(one, fsdp, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert a["grad_norm"] > 10 * 0.05  # every step was clipped


def test_evaluation_of_the_sharded_model_matches(runs: dict[str, Path]) -> None:
    (one,), (fsdp,) = _records(runs["one"], "val"), _records(runs["fsdp"], "val")
    assert one["num_samples"] == fsdp["num_samples"] == 101
    assert fsdp["mse"] == pytest.approx(one["mse"], rel=1e-5)


def test_resume_from_an_fsdp_checkpoint_continues_exactly(runs: dict[str, Path]) -> None:
    resumed, uninterrupted = _last(runs["resumed"]), _last(runs["fsdp"])
    assert resumed["train_state"]["global_step"] == 6
    # It did continue from step 3 (a fresh run would reach the same weights too).
    assert [r["step"] for r in _records(runs["resumed"], "train")] == [4, 6]
    for name, weight in uninterrupted["model"].items():
        # The same processes, shards and reduction order as the run that was not stopped: bit for bit.
        assert torch.equal(resumed["model"][name], weight), name
    for key, state in uninterrupted["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][key][name], value), f"{key}.{name}"
