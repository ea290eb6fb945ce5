"""Sharded checkpoints (``checkpoint.format: sharded``, the default under FSDP) on 2 gloo processes: what the directory
holds, a resume from one written in the background (``checkpoint.async_save``) that continues bit for bit, the
newest-valid fallback past a damaged shard, and ``export`` / ``eval`` consolidating one in a single process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main
from trainwell.config.checkpoint import CheckpointConfig
from trainwell.engine.checkpoint.manager import CheckpointManager
from trainwell.engine.checkpoint.sharded import read_meta

CONFIG = str(REPO / "configs/examples/regression.yaml")
COMMON = [
    "train.epochs=1",
    "train.max_steps=6",
    "train.log_every=2",
    "task.dropout=0",
    "train.device=cpu",
    "checkpoint.every=3",
    "checkpoint.keep=all",
]


def _train(rank: int, world_size: int, run_dir: Path, extra: tuple[str, ...] = ()) -> None:
    batch = 32 // world_size
    args = [f"run.dir={run_dir}", f"train.batch_size={batch}", *COMMON, *extra]
    assert main(["train", CONFIG, *args]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("one", "fsdp", "resumed")}
    _train(0, 1, dirs["one"])
    # Written in the background: steps 4-6 train while step 3's shards are written (from a copy in CPU memory).
    spawn(_train, 2, dirs["fsdp"], ("distributed.strategy=fsdp", "checkpoint.async_save=true"), init_group=False)
    resume = ("--resume", str(dirs["fsdp"] / "checkpoints/step_00000003.dcp"))
    spawn(_train, 2, dirs["resumed"], ("distributed.strategy=fsdp", *resume), init_group=False)
    return dirs


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    out = directory.parent.parent / "weights.pt"  # beside the run's files, not inside the checkpoint
    assert main(["export", str(directory), "--out", str(out)]) == 0
    return torch.load(out, weights_only=True)


def test_a_sharded_checkpoint_is_a_directory_of_every_process_shards(runs: dict[str, Path]) -> None:
    checkpoints = runs["fsdp"] / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["best.dcp", "last.dcp", "step_00000003.dcp", "step_00000006.dcp"]  # nothing temporary left
    files = sorted(p.name for p in (checkpoints / "last.dcp").iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "trainwell.pt"]
    meta = read_meta(checkpoints / "last.dcp")  # the checksum and every shard's sha256 verify
    assert meta["train_state"]["global_step"] == 6 and len(meta["rng"]) == 2
    assert "model" not in meta and "optimizer" not in meta  # those are in the shards
    # Periodic and best names are hard links to last's files: one write.
    assert os.path.samefile(checkpoints / "last.dcp/__1_0.distcp", checkpoints / "step_00000006.dcp/__1_0.distcp")


def test_export_consolidates_the_shards_into_the_one_process_weights(runs: dict[str, Path]) -> None:
    one = torch.load(runs["one"] / "checkpoints/last.pt", weights_only=True)["model"]
    exported = _weights(runs["fsdp"] / "checkpoints/last.dcp")
    assert sorted(exported) == sorted(one)
    for name, weight in one.items():
        # Reduction order only (see test_fsdp.py): FSDP's shards sum in another order than one process.
        torch.testing.assert_close(exported[name], weight, rtol=0, atol=1e-6, msg=name)


def test_resume_from_shards_written_in_the_background_continues_exactly(runs: dict[str, Path]) -> None:
    resumed = _weights(runs["resumed"] / "checkpoints/last.dcp")
    uninterrupted = _weights(runs["fsdp"] / "checkpoints/last.dcp")
    for name, weight in uninterrupted.items():
        assert torch.equal(resumed[name], weight), name
    assert read_meta(runs["resumed"] / "checkpoints/last.dcp")["train_state"]["global_step"] == 6
    # It did continue from step 3 (a fresh run would reach the same weights too).
    records = [json.loads(line) for line in (runs["resumed"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [4, 6]


def test_eval_reads_a_sharded_checkpoint_in_one_process(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    checkpoint = runs["fsdp"] / "checkpoints/last.dcp"
    assert main(["eval", CONFIG, "--checkpoint", str(checkpoint), "--out", str(out), "train.device=cpu"]) == 0
    records = [json.loads(line) for line in (runs["fsdp"] / "metrics.jsonl").read_text().splitlines()]
    (val,) = [r for r in records if r["kind"] == "val"]
    assert json.loads(out.read_text())["metrics"]["mse"] == pytest.approx(val["mse"], rel=1e-6)


def test_a_damaged_shard_falls_back_to_the_newest_valid_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(runs["fsdp"] / "checkpoints", checkpoints)  # copies: the links are broken here
    shard = checkpoints / "last.dcp/__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    skipped: list[str] = []
    for name in ("last.dcp", "step_00000006.dcp"):  # newest first; step 6 is damaged the same way (was a link)
        os.utime(checkpoints / name, ns=(2 * 10**18, 2 * 10**18))
    (checkpoints / "step_00000006.dcp/trainwell.pt").unlink()  # and this one was never completed
    found = CheckpointManager(checkpoints, CheckpointConfig(), log=skipped.append).find_resumable()
    assert found is not None
    path, payload, rejected = found
    # best.dcp is an intact copy of step 6 here (the copy broke its links), so it is the newest valid one.
    assert path.name == "best.dcp" and payload["train_state"]["global_step"] == 6
    reasons = {r.path.name: r.reason for r in rejected}
    assert "__1_0.distcp" in reasons["last.dcp"] and "trainwell.pt" in reasons["step_00000006.dcp"]
