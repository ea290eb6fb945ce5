"""Resume mid-epoch at another number of processes, same global batch (48): 2→1, 2→3 and 1→2, under DDP (single-file
checkpoints) and FSDP (sharded ones; 1→2 from a one-process single file). Every training sample of the epoch is
used exactly once across the stopped and the resumed run, and the final weights equal an uninterrupted run's.

The stopped run is the whole run (it goes on to the end); what it saw before the checkpoint at step 4 is the first
4 micro-batches of each process's record. 480 samples / 48 = 10 steps, so nothing is padded at the epoch's end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from distributed_helpers import REPO, spawn

from trainwell.cli import main
from trainwell.engine.checkpoint.weights import export_weights

pytestmark = pytest.mark.slow  # nine short runs, six of them multi-process (~40 s on two cores)

CONFIG = str(REPO / "configs/examples/regression.yaml")
GLOBAL_BATCH, SIZE, STOP = 48, 480, 4
COMMON = [
    "task.class_path=distributed_helpers:RecordingTask",
    f"data.train_size={SIZE}",
    "train.epochs=1",
    "train.log_every=5",
    "task.dropout=0",
    "train.device=cpu",
    f"checkpoint.every={STOP}",
    "checkpoint.keep=all",
    "diagnostics.enabled=false",
]
# Reduction order only: whole gradients all-reduced over 1, 2 or 3 processes, or FSDP's shards, sum in other orders.
TOLERANCE = 1e-6


def _train(rank: int, world_size: int, run_dir: Path, extra: tuple[str, ...] = ()) -> None:
    (run_dir / "records").mkdir(exist_ok=True)
    batch = GLOBAL_BATCH // world_size
    args = [f"run.dir={run_dir}", f"train.batch_size={batch}", f"task.record_dir={run_dir / 'records'}"]
    assert main(["train", CONFIG, *args, *COMMON, *extra]) == 0


def _train_global(rank: int, world_size: int, run_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """As :func:`_train`, but the config names the global batch and each process derives its own."""
    (run_dir / "records").mkdir(exist_ok=True)
    args = [f"run.dir={run_dir}", f"train.global_batch_size={GLOBAL_BATCH}", f"task.record_dir={run_dir / 'records'}"]
    assert main(["train", CONFIG, *args, *COMMON, *extra]) == 0


def _run(tmp: Path, name: str, world: int, *extra: str, train: Callable[..., None] = _train) -> Path:
    run_dir = tmp / name
    run_dir.mkdir()
    if world == 1:
        train(0, 1, run_dir, extra)
    else:
        spawn(train, world, run_dir, extra, init_group=False)
    return run_dir


def _seen(run_dir: Path, first: int | None = None) -> list[int]:
    """The indices the run trained on (``first``: only each process's first micro-batches)."""
    out: list[int] = []
    for record in sorted((run_dir / "records").glob("rank*.txt")):
        lines = record.read_text().splitlines()[:first]
        out += [int(i) for line in lines for i in line.split()]
    return out


def _final(run_dir: Path, tmp: Path) -> dict[str, torch.Tensor]:
    checkpoints = run_dir / "checkpoints"
    last = checkpoints / "last.pt" if (checkpoints / "last.pt").exists() else checkpoints / "last.dcp"
    out = tmp / f"{run_dir.name}-weights.pt"
    export_weights(last, out)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resharding")


@pytest.fixture(scope="module")
def reference(tmp: Path) -> Path:
    """One process, uninterrupted (its step-4 checkpoint is the start of the 1→2 resumes)."""
    return _run(tmp, "reference", 1)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize(("before", "after"), [(2, 1), (2, 3), (1, 2)])
def test_resume_on_another_number_of_processes(
    tmp: Path, reference: Path, strategy: str, before: int, after: int
) -> None:
    name = f"{strategy}-{before}to{after}"
    if before == 1:
        stopped = reference  # one process: the strategy makes no difference, the file is single
    else:
        stopped = tmp / f"{strategy}-stopped"
        if not stopped.exists():
            _run(tmp, stopped.name, before, f"distributed.strategy={strategy}")
    suffix = ".pt" if (stopped / "checkpoints/last.pt").exists() else ".dcp"
    checkpoint = stopped / f"checkpoints/step_{STOP:08d}{suffix}"
    resumed = _run(tmp, name, after, f"distributed.strategy={strategy}", "--resume", str(checkpoint))

    # The whole epoch, each sample exactly once: the stopped run's first 4 steps, then the resumed run's.
    per_process = GLOBAL_BATCH // before
    seen = _seen(stopped, first=STOP) + _seen(resumed)
    assert len(_seen(stopped, first=STOP)) == STOP * per_process * before
    assert sorted(seen) == list(range(SIZE))
    log = (resumed / "train.log").read_text()
    assert f"Resharded from {before} to {after} process(es)" in log and "restarts from its start" not in log

    expected, got = _final(reference, tmp), _final(resumed, tmp)
    for key, weight in expected.items():
        torch.testing.assert_close(got[key], weight, rtol=0, atol=TOLERANCE, msg=key)


def _attempt(rank: int, world_size: int, run_dir: Path, checkpoint: Path) -> None:
    args = [f"run.dir={run_dir}", "train.batch_size=48", *COMMON, "--resume", str(checkpoint)]
    assert main(["train", CONFIG, *args]) != 0  # a global batch of 2 × 48 instead of 48


def test_another_global_batch_is_refused(tmp: Path, reference: Path, capfd: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp / "refused"
    spawn(_attempt, 2, run_dir, reference / f"checkpoints/step_{STOP:08d}.pt", init_group=False)
    err = capfd.readouterr().err
    assert "global batch of 48 (train.batch_size 48 × 1 process(es))" in err
    assert "set train.batch_size=24 to keep it (train.global_batch_size=48 keeps it on any number" in err
    assert not list(run_dir.glob("checkpoints/*"))  # refused before anything was trained or saved


def test_global_batch_size_resumes_on_another_number_of_processes_unchanged(tmp: Path, reference: Path) -> None:
    # Stopped on 2 processes (24 each); the same command line with train.global_batch_size on 3 derives 16 each.
    stopped = tmp / "ddp-stopped"
    if not stopped.exists():
        _run(tmp, stopped.name, 2, "distributed.strategy=ddp")
    checkpoint = stopped / f"checkpoints/step_{STOP:08d}.pt"
    resumed = _run(tmp, "global-2to3", 3, "--resume", str(checkpoint), train=_train_global)

    seen = _seen(stopped, first=STOP) + _seen(resumed)
    assert sorted(seen) == list(range(SIZE))
    assert len(_seen(resumed)) == SIZE - STOP * GLOBAL_BATCH
    log = (resumed / "train.log").read_text()
    assert "Resharded from 2 to 3 process(es)" in log and "train.batch_size: 24" in log  # set, not derived, before
    assert "batch: 16 per process × 3 process(es) × 1 accumulation = global batch 48 (train.global_batch_size)" in log
    assert "batch_size: 16" in (resumed / "config.yaml").read_text()  # the derived value is what config.yaml records
    expected, got = _final(reference, tmp), _final(resumed, tmp)
    for key, weight in expected.items():
        torch.testing.assert_close(got[key], weight, rtol=0, atol=TOLERANCE, msg=key)
