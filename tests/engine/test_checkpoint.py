"""Checkpoint files: checksums catch damage, writes are atomic, loading is weights-only, rotation, fallback."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from trainwell.cli import main
from trainwell.config.checkpoint import CheckpointConfig
from trainwell.engine.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    CheckpointManager,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    load_checkpoint,
    load_model_weights,
)
from trainwell.engine.checkpoint.files import content_digest

CONFIG = "configs/examples/regression.yaml"


def _payload(step: int = 0) -> dict[str, Any]:
    return {
        "model": {"w": torch.arange(256, dtype=torch.float32) + step, "b": torch.zeros(3, dtype=torch.bfloat16)},
        "train_state": {"epoch": step, "global_step": step, "best_value": None, "names": ("a", "b")},
        "metrics": {"mse": 0.5},
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_round_trip_opens_with_plain_weights_only_load(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    atomic_save(_payload(3), path)
    raw = torch.load(path, weights_only=True)  # what any user can do, without trainwell
    assert set(raw) == {"model", "train_state", "metrics", "checksum"}
    assert _same(load_checkpoint(path), _payload(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_digest_sees_every_kind_of_change() -> None:
    base = content_digest(_payload())
    changed = [_payload() for _ in range(5)]
    changed[0]["model"]["w"][17] += 1e-6
    changed[1]["model"]["b"] = changed[1]["model"]["b"].float()  # same values, other dtype
    changed[2]["train_state"]["names"] = ["a", "b"]  # list instead of tuple
    changed[3]["metrics"]["mse"] = 0.5000000001
    changed[4]["model"]["w"] = changed[4]["model"]["w"].reshape(16, 16)
    digests = {content_digest(p) for p in changed}
    assert base not in digests and len(digests) == len(changed)


def test_bit_flip_in_tensor_data_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    payload = _payload()
    atomic_save(payload, path)
    data = bytearray(path.read_bytes())
    offset = data.find(payload["model"]["w"].numpy().tobytes())
    assert offset > 0  # torch.save stores tensor bytes uncompressed
    data[offset + 4 * 100 + 1] ^= 0x04  # one bit of w[100]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"c\.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.5, 0.99])
def test_truncated_file_is_detected(tmp_path: Path, keep_fraction: float) -> None:
    path = tmp_path / "c.pt"
    atomic_save(_payload(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("fsync", OSError(errno.ENOSPC, "No space left on device")),
        ("replace", PermissionError(errno.EACCES, "Permission denied")),
    ],
)
def test_failed_write_leaves_previous_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, error: OSError
) -> None:
    path = tmp_path / LAST
    atomic_save(_payload(1), path)
    before = path.read_bytes()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(os, target, fail)
    with pytest.raises(CheckpointError, match=rf"{LAST}.*{error.strerror}.*previous checkpoints are untouched"):
        atomic_save(_payload(2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [LAST]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / LAST
    atomic_save(_payload(1), path)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="Permission denied"):
            atomic_save(_payload(2), path)
    finally:
        tmp_path.chmod(0o700)
    assert _same(load_checkpoint(path), _payload(1))


def test_payload_that_weights_only_could_not_open_is_refused_at_save(tmp_path: Path) -> None:
    payload = _payload()
    payload["metrics"]["per_joint"] = np.zeros(3)
    with pytest.raises(CheckpointError, match=r"checkpoint\['metrics'\]\['per_joint'\].*numpy"):
        atomic_save(payload, tmp_path / "c.pt")
    assert not list(tmp_path.iterdir())


class _Malicious:
    """Unpickling this runs ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def malicious_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Malicious(marker)}, zipped)
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"w": _Malicious(marker)}, legacy, _use_new_zipfile_serialization=False)
    raw = tmp_path / "evil_raw.pkl"
    raw.write_bytes(pickle.dumps({"w": _Malicious(marker)}, protocol=2))
    assert not marker.exists()
    return marker, [zipped, legacy, raw]


def test_malicious_pickle_is_refused_and_runs_nothing(malicious_files: tuple[Path, list[Path]]) -> None:
    marker, files = malicious_files
    for path in files:
        with pytest.raises(UnsafeCheckpointError, match=rf"{path.name}.*run code \(Unsupported global: GLOBAL .*open"):
            load_checkpoint(path)
        with pytest.raises(UnsafeCheckpointError):
            load_model_weights(nn.Linear(1, 1), path)
    assert not marker.exists()


def test_cli_refuses_malicious_checkpoint_everywhere(
    malicious_files: tuple[Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker, files = malicious_files
    evil = files[0]
    run = [f"run.dir={tmp_path / 'run'}", "train.epochs=1", "data.train_size=32", "train.progress_bar=off"]
    run.append("schedule.warmup_steps=0")  # one optimizer step: the file's 5 warmup steps would be refused
    assert main(["eval", CONFIG, "--checkpoint", str(evil)]) == 1
    assert main(["train", CONFIG, *run, "--init-from", str(evil)]) == 1
    assert main(["train", CONFIG, *run, "--resume", str(evil)]) == 1
    assert capsys.readouterr().err.count("Refusing to load") == 3
    assert not marker.exists()


# -- model weights only -----------------------------------------------------------------------------


def _model(hidden: int, extra: bool = False) -> nn.Module:
    layers = [nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2)]
    if extra:
        layers.append(nn.Linear(2, 2))
    return nn.Sequential(*layers)


def test_init_weights_report_missing_unexpected_and_shape_mismatch(tmp_path: Path) -> None:
    source = _model(hidden=8, extra=True)
    path = tmp_path / "src.pt"
    atomic_save({"model": source.state_dict()}, path)
    target = _model(hidden=6)
    before = {k: v.clone() for k, v in target.state_dict().items()}

    with pytest.raises(CheckpointError) as info:
        load_model_weights(target, path)
    message = str(info.value)
    assert "0.weight (checkpoint (8, 4) vs model (6, 4))" in message
    assert "2.weight (checkpoint (2, 8) vs model (2, 6))" in message
    assert "unexpected (not in the model): 3.weight, 3.bias" in message
    assert "--init-from-non-strict" in message and "written by a run of task" not in message  # no config: no task
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # strict: nothing loaded

    # A trainwell checkpoint names the task whose run wrote it (another pack's checkpoint is the usual cause).
    atomic_save({"model": source.state_dict(), "config": {"task": {"class_path": "pkg.tasks:Other"}}}, path)
    with pytest.raises(CheckpointError, match=r"It was written by a run of task pkg\.tasks:Other\."):
        load_model_weights(target, path)

    report = load_model_weights(target, path, strict=False)
    assert report.loaded == ["2.bias"] and report.missing == []
    assert torch.equal(target.state_dict()["2.bias"], source.state_dict()["2.bias"])
    assert torch.equal(target.state_dict()["0.weight"], before["0.weight"])

    missing_report = load_model_weights(_model(hidden=8, extra=True), tmp_path / "src.pt", strict=False)
    assert missing_report.is_exact


def test_plain_and_ddp_state_dicts_load(tmp_path: Path) -> None:
    source = _model(hidden=5)
    plain = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, plain)  # no trainwell checksum
    target = _model(hidden=5)
    assert load_model_weights(target, plain).is_exact
    loaded = target.state_dict()
    assert all(torch.equal(value, loaded[name]) for name, value in source.state_dict().items())


# -- the checkpoint directory -----------------------------------------------------------------------


def _manager(directory: Path, **cfg: Any) -> tuple[CheckpointManager, list[str]]:
    messages: list[str] = []
    return CheckpointManager(directory, CheckpointConfig(**cfg), log=messages.append), messages


def _step_of(path: Path) -> int:
    return load_checkpoint(path)["train_state"]["global_step"]


def test_rotation_keeps_exactly_keep_periodic_files_plus_best_and_last(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, every_epochs=1, keep=2)
    for epoch in range(1, 7):
        manager.save(_payload(epoch), periodic=f"epoch_{epoch:04d}.pt", best=epoch in (1, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST, "epoch_0005.pt", "epoch_0006.pt", LAST]
    assert _step_of(tmp_path / BEST) == 3 and _step_of(tmp_path / LAST) == 6
    assert _step_of(tmp_path / "epoch_0005.pt") == 5

    every_other, _ = _manager(tmp_path / "b", keep=3)
    for epoch in range(1, 10):
        every_other.save(_payload(epoch), periodic=f"epoch_{epoch:04d}.pt" if epoch % 2 == 0 else None)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "epoch_0004.pt",
        "epoch_0006.pt",
        "epoch_0008.pt",
        LAST,
    ]


def test_keep_all_keeps_every_periodic_file_and_step_names_sort_by_write_time(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, keep="all")
    for step in (100, 200, 300):
        manager.save(_payload(step), periodic=f"step_{step:08d}.pt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [LAST, "step_00000100.pt", "step_00000200.pt", "step_00000300.pt"]
    capped, _ = _manager(tmp_path / "capped", keep=1)
    for step in (5, 10):
        capped.save(_payload(step), periodic=f"step_{step:08d}.pt")
    assert sorted(p.name for p in (tmp_path / "capped").iterdir()) == [LAST, "step_00000010.pt"]
    none, _ = _manager(tmp_path / "none", keep=0)
    none.save(_payload(1), periodic="epoch_0001.pt")
    assert [p.name for p in (tmp_path / "none").iterdir()] == [LAST]


def test_latest_is_replaced_without_touching_linked_epoch_file(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, every_epochs=1, keep=5)
    manager.save(_payload(4), periodic="epoch_0001.pt", best=True)
    manager.save(_payload(6))
    assert _step_of(tmp_path / LAST) == 6
    assert _step_of(tmp_path / "epoch_0001.pt") == 4 and _step_of(tmp_path / BEST) == 4


def test_resume_scan_skips_a_truncated_newest_file_and_says_why(tmp_path: Path) -> None:
    manager, messages = _manager(tmp_path, every_epochs=1, keep=3)
    assert manager.find_resumable() is None  # nothing yet: a fresh start
    manager.save(_payload(6), periodic="epoch_0001.pt")
    manager.save(_payload(8))
    last = tmp_path / LAST
    with open(last, "r+b") as handle:
        handle.truncate(last.stat().st_size // 3)
    found = manager.find_resumable()
    assert found is not None
    path, payload, rejected = found
    assert path.name == "epoch_0001.pt" and payload["train_state"]["global_step"] == 6
    assert [r.path.name for r in rejected] == [LAST]
    assert len(messages) == 1 and "last.pt" in messages[0] and "truncated or damaged" in messages[0]


def test_resume_scan_refuses_to_start_afresh_over_damaged_files(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path)
    (tmp_path / LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"No usable checkpoint.*last\.pt: .*truncated or damaged"):
        manager.find_resumable()


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path)
    manager.save(_payload(1))
    (tmp_path / f".{LAST}.tmp-12345").write_bytes(b"half")
    assert [p.name for p in manager.remove_stale_temp_files()] == [f".{LAST}.tmp-12345"]
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
