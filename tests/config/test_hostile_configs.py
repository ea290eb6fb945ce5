"""Hostile or mistaken config files, as a user hits them on the command line: repeated keys, alias bombs,
non-finite and impossible numbers. Each is refused by key and file, exit code 2, no traceback, nothing written."""

import time
from pathlib import Path

import pytest

from trainwell.cli import EXIT_CONFIG_ERROR, main
from trainwell.config.loader import ConfigError
from trainwell.config.yaml_checks import MAX_ALIAS_COPIES
from trainwell.experiment import load_config

CONFIG = Path("configs/examples/regression.yaml")


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("trainwell: config error: ")
    return err


def test_repeated_section_names_key_file_and_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = CONFIG.read_text()
    first_line = text.splitlines().index("train:") + 1
    path = tmp_path / "exp.yaml"
    path.write_text(text + "train:\n  epochs: 1\n")  # the second section would silently drop batch_size, seed, ...
    second_line = len(text.splitlines()) + 1
    err = _refused(["train", str(path), f"run.dir={tmp_path / 'run'}"], capsys)
    assert f"'{path}'" in err and "'train'" in err
    assert f"line {first_line}" in err and f"line {second_line}" in err
    assert not (tmp_path / "run").exists()


def test_repeated_key_inside_a_section_names_the_dotted_key(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(CONFIG.read_text().replace("  lr: 3e-3\n", "  lr: 3e-3\n  weight_decay: 0.0\n  lr: 1e-2\n"))
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "'optim.lr'" in message and str(path) in message
    assert f"line {lines.index('  lr: 3e-3') + 1}" in message and f"line {lines.index('  lr: 1e-2') + 1}" in message


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then a key of the base is an override, the point of merging, not a repeated key."""
    path = tmp_path / "exp.yaml"
    text = CONFIG.read_text().replace("optim:\n  name: adamw\n", "optim:\n  <<: &base {name: sgd, lr: 0.5}\n")
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 3e-3  # the file's own lr wins over the merged one


def test_alias_bomb_is_refused_by_file_without_expanding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nine levels of nine aliases: 9⁹ ≈ 387 million strings from ~600 bytes ("billion laughs").
    lines = ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text(CONFIG.read_text() + "\n".join(lines) + "\n")
    assert path.stat().st_size < CONFIG.stat().st_size + 1000
    started = time.perf_counter()
    err = _refused(["train", str(path), f"run.dir={tmp_path / 'run'}"], capsys)
    assert time.perf_counter() - started < 1.0  # the bound; a few ms here (nothing is expanded)
    assert f"'{path}'" in err and "alias" in err
    assert not (tmp_path / "run").exists()


def test_small_aliases_stay_allowed(tmp_path: Path) -> None:
    """Aliasing a small block a few times (the ordinary use) passes; the bound sits far above it."""
    path = tmp_path / "exp.yaml"
    block = "[" + ", ".join(["0.9"] * 2) + "]"
    text = CONFIG.read_text().replace("  name: adamw\n", f"  name: adamw\n  betas: &b {block}\n")
    path.write_text(text.replace("  decay: cosine\n", "  decay: cosine\n  onecycle_moms: *b\n"))
    cfg = load_config(path)
    assert cfg.optim.betas == [0.9, 0.9] and cfg.schedule.onecycle_moms == [0.9, 0.9]
    assert MAX_ALIAS_COPIES >= 1000


@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [
        ("optim.lr=.nan", "optim.lr", "nan"),
        ("optim.lr=inf", "optim.lr", "inf"),
        ("optim.lr=-0.001", "optim.lr", "-0.001"),
        ("optim.weight_decay=-0.01", "optim.weight_decay", "-0.01"),
        ("optim.weight_decay=.nan", "optim.weight_decay", "nan"),
        ("train.clip_grad_norm=-1", "train.clip_grad_norm", "-1.0"),
        ("train.clip_grad_norm=.inf", "train.clip_grad_norm", "inf"),
        ("task.loss_weights.l1=.nan", "task.loss_weights.l1", "nan"),  # a task's own section is checked too
        ("optim.betas=[0.9, .nan]", "optim.betas[1]", "nan"),
    ],
)
def test_nonfinite_and_impossible_numbers_are_refused_by_key(
    override: str, key: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["train", str(CONFIG), override, f"run.dir={tmp_path / 'run'}"], capsys)
    assert f"'{key}'" in err and f"override '{override}'" in err and f"(got {shown})" in err
    assert not (tmp_path / "run").exists()


def test_nonfinite_number_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(CONFIG.read_text().replace("  lr: 3e-3", "  lr: .nan"))
    with pytest.raises(ConfigError, match=rf"'optim\.lr' in '{path}' must be a finite number \(got nan\)"):
        load_config(path)


def test_warmup_longer_than_the_run_is_refused_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 64 samples / batch 32 = 2 steps per epoch × 3 epochs = 6 optimizer steps.
    run = tmp_path / "run"
    args = ["train", str(CONFIG), "data.train_size=64", "train.device=cpu", f"run.dir={run}"]
    err = _refused([*args, "schedule.warmup_steps=7"], capsys)
    assert "'schedule.warmup_steps' is 7" in err and "6 optimizer steps" in err
    assert "train.epochs=3 × 2" in err
    assert not list(run.glob("checkpoints/*.pt"))  # refused before the first step (the plan is resolved at setup)


def test_warmup_against_max_steps_names_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", str(CONFIG), "data.train_size=64", "train.max_steps=4", f"run.dir={run}"]
    err = _refused([*args, "schedule.warmup_steps=5", "train.device=cpu"], capsys)
    assert "'schedule.warmup_steps' is 5" in err and "train.max_steps=4" in err


def _hashes(directory: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.lr=.nan", "'optim.lr'"),  # refused while loading the config
        ("optim.weight_decay=-0.01", "'optim.weight_decay'"),
        ("schedule.warmup_steps=7", "'schedule.warmup_steps' is 7"),  # refused once the plan is resolved
    ],
)
def test_a_refused_resume_changes_nothing_in_the_existing_run_directory(
    override: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 64 samples / batch 32 = 2 steps per epoch × 3 epochs = 6 optimizer steps.
    run = tmp_path / "run"
    args = ["train", str(CONFIG), "data.train_size=64", "data.val_size=16", "train.device=cpu", f"run.dir={run}"]
    assert main([*args, "train.progress_bar=off"]) == 0
    before = _hashes(run)
    assert {"config.yaml", "metrics.jsonl", "status.json", "train.log", "checkpoints/last.pt"} <= set(before)
    capsys.readouterr()
    err = _refused([*args, override, "--resume", "auto"], capsys)
    assert named in err
    assert _hashes(run) == before  # no config.resume-1.yaml, no log line, no status, no lock file left
