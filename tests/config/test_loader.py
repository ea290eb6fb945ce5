"""Config loading: typed validation, overrides, and errors that name the key, the file and a fix."""

from pathlib import Path

import pytest
import yaml

from trainwell.cli import EXIT_CONFIG_ERROR, main
from trainwell.config.loader import ConfigError, config_to_yaml
from trainwell.experiment import load_config
from trainwell.tasks.regression import RegressionDataConfig, RegressionTaskConfig

CONFIG = "configs/examples/regression.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_file_and_overrides_are_typed_and_merged() -> None:
    cfg = load_config(CONFIG, ["optim.lr=3e-4", "train.epochs=5", "train.amp=off", "data.train_size=64"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 5
    assert cfg.train.amp == "off"  # YAML 1.1 would have made this False
    assert isinstance(cfg.task, RegressionTaskConfig) and isinstance(cfg.data, RegressionDataConfig)
    assert cfg.data.train_size == 64
    assert cfg.task.loss_weights == {"mse": 1.0, "l1": 0.1}  # from the file, not the defaults


def test_unknown_key_in_file_suggests_nearest(tmp_path: Path) -> None:
    path = _write(tmp_path, Path(CONFIG).read_text().replace("  lr: 3e-3", "  lrr: 3e-3"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "optim.lrr" in message and str(path) in message and "did you mean 'optim.lr'" in message.lower()


def test_unknown_override_names_the_override() -> None:
    with pytest.raises(ConfigError, match=r"train\.epoch=3.*[Dd]id you mean 'train\.epochs'"):
        load_config(CONFIG, ["train.epoch=3"])


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, Path(CONFIG).read_text().replace("batch_size: 32", "batch_size: lots"))
    with pytest.raises(ConfigError, match=r"train\.batch_size.*exp\.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train\.amp"):
        load_config(CONFIG, ["train.amp=fp8"])


def test_missing_class_path_and_bad_import(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="class_path"):
        load_config(_write(tmp_path, "train: {epochs: 1}\n"))
    with pytest.raises(ConfigError, match="did you mean 'RegressionTask'"):
        load_config(CONFIG, ["task.class_path=trainwell.tasks.regression:RegresionTask"])


def test_range_checks() -> None:
    with pytest.raises(ConfigError, match=r"train\.grad_accum_steps.*at least 1"):
        load_config(CONFIG, ["train.grad_accum_steps=0"])
    with pytest.raises(ConfigError, match=r"eval\.best_metric"):
        load_config(CONFIG, ["eval.best_metric=__import__('os')"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, ["train.amp=bf16", "train.clip_grad_norm=null"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["train"]["amp"] == "bf16"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "does/not/exist.yaml"], "does not exist"),
        (["train", CONFIG, "optim.lrr=1"], "did you mean 'optim.lr'"),
        (["train", CONFIG, "train.epochs=many"], "train.epochs"),
        (["train", CONFIG, "oops"], "KEY=VALUE"),
    ],
)
def test_cli_config_errors_exit_nonzero(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert expected.lower() in err.lower()
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "checkpoint.keep=-1",
            "Config key 'checkpoint.keep' in command-line override 'checkpoint.keep=-1' must be ≥ 0",
        ),
        ("train.log_every=0.2epochs", "'train.log_every' in command-line override 'train.log_every=0.2epochs'"),
        ("schedule.decay=step", "schedule.step_milestones"),
    ],
)
def test_range_errors_name_the_override_that_set_the_value(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, [override])
    assert expected in str(err.value)


def test_keep_all_and_epoch_intervals_are_accepted() -> None:
    cfg = load_config(CONFIG, ["checkpoint.keep=all", "train.log_every=0.2ep", "eval.every=500"])
    assert cfg.checkpoint.keep_count is None and cfg.train.log_every == "0.2ep" and cfg.eval.every == 500


def test_distributed_strategy_is_typed_and_checked() -> None:
    cfg = load_config(CONFIG, ["distributed.strategy=fsdp", "distributed.fsdp.units=[net.*]"])
    assert cfg.distributed.strategy == "fsdp" and cfg.distributed.fsdp.units == ["net.*"]
    assert load_config(CONFIG).distributed.strategy == "ddp"  # the default
    with pytest.raises(ConfigError, match=r"distributed\.strategy.*distributed\.strategy=zero3"):
        load_config(CONFIG, ["distributed.strategy=zero3"])
    with pytest.raises(ConfigError, match=r"'train\.amp'.*bf16"):  # loss scaling would judge one shard only
        load_config(CONFIG, ["distributed.strategy=fsdp", "train.amp=fp16"])
