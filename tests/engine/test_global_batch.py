"""train.global_batch_size: the per-process micro-batch derived for the world size and accumulation, or a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwell.cli import EXIT_CONFIG_ERROR, main
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.plan import PlanError, with_global_batch


def _cfg(global_batch: int | None, accum: int = 1) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.train.global_batch_size, cfg.train.grad_accum_steps, cfg.train.batch_size = global_batch, accum, 5
    return cfg


@pytest.mark.parametrize(("world", "accum", "per_process"), [(1, 1, 48), (2, 1, 24), (3, 2, 8), (4, 3, 4)])
def test_the_micro_batch_times_processes_times_accumulation_is_the_global_batch(
    world: int, accum: int, per_process: int
) -> None:
    cfg = _cfg(48, accum)
    resolved = with_global_batch(cfg, world)
    assert resolved.train.batch_size == per_process
    assert resolved.train.batch_size * world * accum == 48
    assert cfg.train.batch_size == 5  # the caller's config is not modified


def test_unset_leaves_the_per_process_batch_alone() -> None:
    cfg = _cfg(None)
    assert with_global_batch(cfg, 4) is cfg and cfg.train.batch_size == 5


def test_a_global_batch_that_does_not_split_is_refused_with_the_process_counts_that_work() -> None:
    with pytest.raises(PlanError) as err:
        with_global_batch(_cfg(12, accum=2), 4)
    message = str(err.value)
    assert "'train.global_batch_size' is 12" in message and "4 process(es) × train.grad_accum_steps=2" in message
    # 12 = k × 2 × world: world ∈ {1, 2, 3, 6}
    assert "[1, 2, 3, 6]" in message


def test_a_global_batch_below_one_is_a_config_problem() -> None:
    cfg = _cfg(0)
    assert ("train.global_batch_size", "must be null or at least 1") in list(cfg.train.problems())


def test_the_cli_refuses_it_before_the_run_directory_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "configs/examples/regression.yaml", f"run.dir={run}", "train.device=cpu"]
    assert main([*argv, "train.global_batch_size=7", "train.grad_accum_steps=2"]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'train.global_batch_size' is 7" in err
    assert not run.exists()


def test_a_resume_does_not_report_the_derived_batch_as_a_change() -> None:
    from trainwell.engine.checkpoint.resume import config_changes

    saved = {"train": {"global_batch_size": 48, "batch_size": 24, "epochs": 2}}
    assert config_changes(saved, {"train": {"global_batch_size": 48, "batch_size": 16, "epochs": 3}}) == [
        "train.epochs: 2 → 3"
    ]
    # A per-process batch set by hand (no global one) is a change worth saying.
    saved = {"train": {"global_batch_size": None, "batch_size": 24}}
    assert config_changes(saved, {"train": {"global_batch_size": 48, "batch_size": 16}}) == [
        "train.batch_size: 24 → 16",
        "train.global_batch_size: None → 48",
    ]
