"""``task.model.language_model`` must be a local GPT-2 directory: a hub name or an incomplete directory is one clear
error naming the directory and the files it lacks, never a download and never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwell.config.loader import ConfigError
from trainwell.tasks.captioning.tokenizer import require_language_model_dir, train_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def test_the_cli_names_the_files_and_directory_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    config = str(ROOT / "configs/captioning/tiny.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "trainwell", "train", config, "task.model.language_model=gpt2", f"run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr
    assert "task.model.language_model='gpt2'" in message
    assert str(tmp_path / "gpt2") in message  # where it looked: the directory, relative to the working directory
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.json"):
        assert name in message
    assert len(message.strip().splitlines()) == 1


def test_an_incomplete_directory_lists_only_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ConfigError) as error:
        require_language_model_dir(str(tmp_path))
    message = str(error.value)
    assert f"{tmp_path} has no model.safetensors or pytorch_model.bin" in message
    assert "merges.txt (with vocab.json)" in message
    assert "no config.json" not in message
    (tmp_path / "model.safetensors").write_bytes(b"")
    train_tokenizer(["a dog on a bench"], 300).save(tmp_path)  # tokenizer.json: vocab.json needs no merges.txt
    assert require_language_model_dir(str(tmp_path)) == tmp_path
