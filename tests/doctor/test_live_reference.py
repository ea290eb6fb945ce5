"""The live doctor's reference values: measured on the untrained model, recorded for ``trainwell doctor``, and
without any effect on the training itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainwell.cli import main
from trainwell.doctor.offline import diagnose_run
from trainwell.records.metrics import read_metrics

SMALL = [
    "configs/examples/regression.yaml",
    "data.train_size=128",
    "data.val_size=32",
    "train.batch_size=16",
    "train.epochs=1",
    "train.progress_bar=off",
]


def train(run_dir: Path, *extra: str) -> int:
    return main(["train", *SMALL, f"run.dir={run_dir}", *extra])


def test_loss_init_is_the_loss_of_the_first_step_and_trainwell_doctor_reads_it(tmp_path: Path) -> None:
    # With log_every=1 the first log line is the loss of step 1, computed on the untrained model: the doctor's
    # probe (same batch, before any update, dropout off) must find the same number.
    assert train(tmp_path, "train.log_every=1", "task.dropout=0") == 0
    lines = read_metrics(tmp_path / "metrics.jsonl")
    first = next(r for r in lines if r["kind"] == "train")
    reference = diagnose_run(tmp_path).context.reference
    assert reference["loss_init"] == pytest.approx(first["loss"], rel=1e-5)
    assert 0 < reference["loss_init_std"] < reference["loss_init"]  # the halves of one batch differ a little
    assert reference["frozen_share"] == 0.0 and reference["weight_norm_init"] > 0
    specs = diagnose_run(tmp_path).context.metric_specs
    assert specs["mse"]["plausible"][1] > 0 and specs["mse"]["higher_is_better"] is False


def test_the_doctor_changes_nothing_in_the_training(tmp_path: Path) -> None:
    # Dropout draws from the RNG on every forward: the probe's extra forwards must not shift the stream.
    on, off = tmp_path / "on", tmp_path / "off"
    assert train(on, "task.dropout=0.2", "train.log_every=2") == 0
    assert train(off, "task.dropout=0.2", "train.log_every=2", "diagnostics.enabled=false") == 0
    a = torch.load(on / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(off / "checkpoints/last.pt", weights_only=True)["model"]
    for name, weight in a.items():
        assert torch.equal(weight, b[name]), name


def test_a_tuple_batch_is_halved_and_a_batch_of_one_gives_no_spread() -> None:
    from trainwell.doctor.batch import batch_halves as _halves

    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5.0)
    first, second = _halves((x, y))
    assert isinstance(first, tuple) and torch.equal(first[0], x[:2]) and torch.equal(second[1], y[2:])
    assert [type(h) for h in _halves([x, y])] == [list, list]
    assert _halves((x[:1], y[:1])) == [] and _halves((x, y[:4])) == []  # one sample; sizes that differ


def test_a_run_with_batches_of_one_records_no_spread(tmp_path: Path) -> None:
    assert train(tmp_path, "train.batch_size=1", "data.train_size=16", "train.log_every=4") == 0
    reference = diagnose_run(tmp_path).context.reference
    assert reference["loss_init"] > 0 and "loss_init_std" not in reference


def test_the_first_batch_is_not_computed_twice(tmp_path: Path) -> None:
    # The doctor's reference reuses the training step's own loss; only the two halves run once more.
    from trainwell.api import build_run
    from trainwell.config.schema import ExperimentConfig
    from trainwell.engine.distributed import DistEnv
    from trainwell.engine.loop import Trainer
    from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig

    sizes: list[int] = []

    class Counting(RegressionTask):
        def compute_losses(self, model, batch):  # type: ignore[no-untyped-def]
            sizes.append(len(batch["x"]))
            return super().compute_losses(model, batch)

    cfg = ExperimentConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.train.log_every, cfg.train.device = 1, 16, 1, "cpu"
    cfg.schedule.warmup_steps, cfg.run.dir = 0, str(tmp_path)
    task = Counting(RegressionTaskConfig(dropout=0.0), RegressionDataConfig(train_size=64, val_size=16))
    Trainer(build_run(cfg, task, env=DistEnv())).fit()
    assert sizes == [8, 8, 16, 16, 16, 16]  # the probe's halves, then the 4 training steps: no extra 16
    reference = diagnose_run(tmp_path).context.reference
    first = next(r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train")
    assert reference["loss_init"] == pytest.approx(first["loss"], rel=1e-12)  # the step's loss itself
    assert reference["loss_init_std"] > 0
