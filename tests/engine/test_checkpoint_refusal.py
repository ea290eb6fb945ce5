"""A checkpoint the weights-only loader refuses is named with the global it refused, for every command that
loads one (``eval --checkpoint``, ``train --resume FILE``, ``train --resume auto``, ``train --init-from``)."""

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from trainwell.cli import main

CONFIG = "configs/examples/regression.yaml"
SMALL = ["data.train_size=32", "train.epochs=1", "schedule.warmup_steps=0", "train.progress_bar=off"]
# os.system is defined in the platform module (posix on Linux and macOS, nt on Windows): the name torch reports.
SYSTEM = f"{os.system.__module__}.system"


class _RunsAShell:
    """Pickles as a call of ``os.system``; nothing here calls it (pickling only records the reference)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """``(a checkpoint whose unpickling would run a shell command, the file that command would create)``."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"net.0.weight": torch.zeros(1)}, "x": _RunsAShell(f"touch {marker}")}, path)
    assert not marker.exists()
    return path, marker


def _hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file()
    }


def _refused(argv: list[str], path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"Refusing to load '{path}'" in err and f"the refused global is '{SYSTEM}'" in err
    assert "truncated or damaged" not in err
    return err


def test_eval_names_the_refused_global(evil: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = evil
    _refused(["eval", CONFIG, "--checkpoint", str(path)], path, capsys)
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--resume", "--init-from"])
def test_train_names_the_refused_global(
    flag: str, evil: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = evil
    run = tmp_path / "run"
    _refused(["train", CONFIG, *SMALL, f"run.dir={run}", flag, str(path)], path, capsys)
    assert not marker.exists()
    assert not list(run.glob("checkpoints/*.pt"))  # refused before any step


def test_resume_auto_names_the_refused_last_checkpoint(
    evil: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = evil
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(path.read_bytes())
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    before = _hashes(run)
    _refused(["train", CONFIG, *SMALL, f"run.dir={run}", "--resume", "auto"], last, capsys)
    assert not marker.exists()
    assert _hashes(run) == before  # nothing replaced, deleted or added (no lock file, no train.log)


def test_plain_pickle_file_is_named_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a torch file at all: a raw pickle (protocol 2) that references os.system."""
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": _RunsAShell(f"touch {marker}")}, protocol=2))
    _refused(["eval", CONFIG, "--checkpoint", str(path)], path, capsys)
    assert not marker.exists()
