"""The live doctor inside real (small) runs: the non-finite policies, the update probe, debug_loss,
the first-batch report, and `trainwell doctor RUN_DIR` on the files a run leaves."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from trainwell.api import build_run
from trainwell.cli import main
from trainwell.config.schema import ScheduleConfig
from trainwell.doctor.checks import RunContext
from trainwell.doctor.live import TrainingDoctor
from trainwell.doctor.offline import diagnose_run
from trainwell.engine.loop import Trainer
from trainwell.engine.meters import StepStats
from trainwell.engine.nonfinite import NonFiniteLossError
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.step import optimizer_step
from trainwell.experiment import load_config
from trainwell.records.findings import read_finding_lines
from trainwell.records.metrics import read_metrics
from trainwell.tasks.regression import RegressionTask

REGRESSION = "configs/examples/regression.yaml"


class NaNOnceTask(RegressionTask):
    """'mse' is NaN on micro-batch ``NAN_AT`` (1-based); remembers that batch."""

    NAN_AT = 7

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls = 0
        self.bad_batch = None

    def compute_losses(self, model, batch):
        losses = super().compute_losses(model, batch)
        self.calls += 1
        if self.calls == self.NAN_AT:
            self.bad_batch = {k: v.clone() for k, v in batch.items()}
            losses["mse"] = losses["mse"] * float("nan")
        return losses


def _trainer(tmp_path: Path, task_cls=RegressionTask, *overrides: str) -> Trainer:
    cfg = load_config(REGRESSION, [f"run.dir={tmp_path}", "train.progress_bar=off", *overrides])
    return Trainer(build_run(cfg, task_cls(cfg.task, cfg.data)))


def _records(run_dir: Path, kind: str = "train") -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def _findings(run_dir: Path) -> dict[str, dict]:
    lines = (run_dir / "findings.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines) if r["kind"] == "finding"}


def test_stop_names_the_step_and_component_and_saves_that_batch(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, NaNOnceTask)
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(epoch 1, batch 7\).*'mse'"):
        trainer.fit()
    assert trainer.run.state.global_step == 10  # detected at the next log line (log_every 5): no per-step sync
    found = _findings(tmp_path)
    assert set(found) == {"train.nonfinite"} and found["train.nonfinite"]["step"] == 7
    saved = torch.load(tmp_path / "nonfinite_batch.pt")
    assert (saved["step"], saved["batch_in_epoch"]) == (7, 7)
    assert (
        saved["losses"]["l1"] == pytest.approx(saved["losses"]["l1"])
        and saved["losses"]["mse"] != saved["losses"]["mse"]
    )
    for key in ("x", "y"):  # the re-read batch is the one that went NaN
        assert torch.equal(saved["batch"][key], trainer.run.task.bad_batch[key])
    assert "Diagnosis (training doctor): 1 error(s)" in (tmp_path / "train.log").read_text()


def test_stop_through_the_cli_exits_with_the_run_error_status(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "integration"))
    rc = main(["train", REGRESSION, f"run.dir={tmp_path}", "task.class_path=fault_tasks:NaNRegressionTask"])
    assert rc == 1 and "Training stopped" in capsys.readouterr().err
    assert main(["doctor", str(tmp_path)]) == 1  # a severe finding


def test_skip_leaves_the_step_out_and_keeps_training(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, NaNOnceTask, "diagnostics.nonfinite=skip")
    trainer.fit()
    assert trainer.run.state.global_step == 48
    train = _records(tmp_path)
    assert [r["step"] for r in train if r.get("nonfinite_skipped")] == [10]
    assert all(r["loss"] == r["loss"] for r in train)  # the NaN micro-batch is not in the means
    assert set(_findings(tmp_path)) == {"train.nonfinite_skipped"}
    assert all(torch.isfinite(p).all() for p in trainer.run.model.parameters())


def test_a_skipped_update_changes_nothing() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = build_scheduler(optimizer, ScheduleConfig(decay="linear"), 10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[1.0, float("nan"), 0.0]])).sum().backward()
    stats = StepStats(torch.device("cpu"))
    applied = optimizer_step(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        clip_grad_norm=None,
        stats=stats,
        measure_norm=False,
        skip_nonfinite=True,
    )
    assert not applied and stats.num_nonfinite == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scheduler.last_epoch == 0 and not optimizer.state  # no LR step, no Adam moments
    assert all(p.grad is None for p in model.parameters())
    assert stats.read_and_reset(None)["nonfinite_skipped"] == 1.0


def test_update_probe_measures_the_relative_step() -> None:
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # ‖w‖ = 5
    doctor = TrainingDoctor(
        load_config(REGRESSION).diagnostics,
        context=RunContext(warmup_steps=0),
        env=Trainer.__init__.__globals__["D"].DistEnv(),
        run_dir=None,
        log=__import__("logging").getLogger("test"),
        task=None,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.weight.grad = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # Δw = 0.5 in one coordinate
    with doctor.watch_update(model, step=3, log_step=True):
        optimizer.step()
    assert doctor.interval_values() == {"update_ratio": pytest.approx(0.1)}
    with doctor.watch_update(model, step=4, log_step=False):  # neither a log step nor the peak-LR step
        optimizer.step()
    assert doctor.interval_values() == {}


def test_debug_loss_prints_internals_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    args = [
        "configs/hand_pose/tiny.yaml",
        "data.train_size=256",
        "data.val_size=32",
        "train.epochs=1",
        "train.batch_size=64",
    ]
    args += ["train.log_every=1", "task.model.hidden=32", "task.model.dropout=0.2", "schedule.warmup_steps=4"]
    assert main(["train", *args, f"run.dir={tmp_path / 'plain'}"]) == 0
    monkeypatch.setenv("TRAINWELL_DEBUG_LOSS", "1")
    assert main(["train", *args, f"run.dir={tmp_path / 'debug'}"]) == 0
    log = (tmp_path / "debug" / "train.log").read_text()
    assert "debug_loss: batch 3" in log and "debug_loss: batch 4" not in log
    assert "target_rel_mean_mm" in log and "pred_cam_mean_mm" in log
    timing = {"steps_per_s", "data_wait_share"}
    plain, debug = _records(tmp_path / "plain"), _records(tmp_path / "debug")
    assert [{k: v for k, v in r.items() if k not in timing} for r in plain] == [
        {k: v for k, v in r.items() if k not in timing} for r in debug
    ]  # dropout masks and BatchNorm statistics untouched
    assert _records(tmp_path / "plain", "val") == _records(tmp_path / "debug", "val")


def test_first_batch_report_and_update_ratio_in_the_outputs(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    log = (tmp_path / "train.log").read_text()
    assert "First-batch data report (3 batches):" in log
    assert any(line.split()[2:5] == ["x", "32×8", "float32"] for line in log.splitlines())
    assert "Diagnosis (training doctor): no problems found" in log
    train = _records(tmp_path)
    assert all(0 < r["update_ratio"] < 0.1 for r in train)
    context = read_finding_lines(tmp_path / "findings.jsonl")[0]
    assert context["kind"] == "context" and context["total_steps"] == 48 and context["clip_grad_norm"] == 1.0
    assert main(["doctor", str(tmp_path)]) == 0


def test_doctor_reads_a_run_without_findings_file(tmp_path: Path, capsys) -> None:
    # A run written by another tool (or an older trainwell): metrics.jsonl and config.yaml only.
    (tmp_path / "config.yaml").write_text("train: {log_every: 5}\noptim: {name: adamw, lr: 0.001}\n")
    records = [{"kind": "train", "epoch": 1, "step": 5 * i, "loss": 6.0 - 0.5 * i} for i in range(1, 7)]
    records += [{"kind": "val", "epoch": e, "step": 15 * e, "mse": 4.5401} for e in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tr')
    diagnosis = diagnose_run(tmp_path)
    assert [f.id for f in diagnosis.findings] == ["val.stuck"]
    assert diagnosis.status.startswith("unfinished")
    assert main(["doctor", str(tmp_path)]) == 1
    assert "[ERROR] val.stuck (step 30)" in capsys.readouterr().out
    assert main(["doctor", str(tmp_path / "nothing")]) == 2
