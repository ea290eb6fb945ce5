"""What real ports (ViECap, OpenPCDet) need, through real runs of the regression task with a twist each."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from port_tasks import EPOCH_LOG, write_plain_loader_script
from small_run import CONFIG, ROOT, SMALL, SignalAtStep, train
from test_resume import assert_bitwise_equal, final_state, records, spawn

from trainwell.api import build_run
from trainwell.cli import main
from trainwell.engine.checkpoint import LAST, load_checkpoint
from trainwell.engine.loop import Trainer
from trainwell.experiment import build_task, load_config
from trainwell.records.findings import read_finding_lines
from trainwell.records.metrics import read_metrics


@pytest.fixture(autouse=True)
def _port_tasks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_openpcdet_style_outputs_log_every_tb_item_and_the_summed_parts(tmp_path: Path) -> None:
    assert train(tmp_path, "task.class_path=port_tasks:OpenPCDetStyleTask", "train.amp=bf16", "train.epochs=1") == 0
    first = _train_records(tmp_path)[0]
    assert {"loss/loss_mse", "loss/loss_l1", "pred_mean", "num_boxes", "mse_disp"} <= set(first)
    assert first["loss"] == pytest.approx(first["loss/loss_mse"] + first["loss/loss_l1"])
    assert first["num_boxes"] == pytest.approx(7.0)  # a Python float of tb_dict, averaged over the interval
    log = (tmp_path / "train.log").read_text()
    assert "| pred_mean " in log and "num_boxes 7" in log


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("PlainFloatLossTask", "loss component 'mse' is a float, not a tensor"),
        ("NoGradLossTask", "loss component 'mse' does not require grad"),
        ("VectorLossTask", "loss component 'mse' has shape (8, 2); components must be scalars"),
    ],
)
def test_loss_contract_errors_name_the_component(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, message: str
) -> None:
    assert train(tmp_path, f"task.class_path=port_tasks:{task}") == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "checkpoints" / LAST).exists()


def test_param_groups_get_their_lr_and_decay_and_each_lr_is_logged(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIG, [*SMALL, f"run.dir={tmp_path}", "optim.weight_decay=0.05", "optim.no_decay_norm_bias=true"]
    )
    from trainwell.config.schema import ParamGroupConfig

    cfg.optim.param_groups = [ParamGroupConfig(match="0.*", name="first", lr_mult=0.1, weight_decay=0.5)]
    trainer = Trainer(build_run(cfg, build_task(cfg)))
    groups = {g["name"]: g for g in trainer.run.optimizer.param_groups}
    assert set(groups) == {"first", "first/no_decay", "default", "no_decay"}
    named = dict(trainer.run.model.named_parameters())
    assert [id(p) for p in groups["first"]["params"]] == [id(named["0.weight"])]
    assert [id(p) for p in groups["first/no_decay"]["params"]] == [id(named["0.bias"])]
    assert groups["first"]["weight_decay"] == 0.5 and groups["first/no_decay"]["weight_decay"] == 0.0
    assert groups["default"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["first"]["lr"] == pytest.approx(0.1 * groups["default"]["lr"])
    trainer.fit()
    record = _train_records(tmp_path)[-1]
    assert record["lr/first"] == pytest.approx(0.1 * record["lr/default"])
    assert "lr first " in (tmp_path / "train.log").read_text()


def test_a_pattern_that_matches_nothing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "groups.yaml"
    text = (
        Path(CONFIG).read_text().replace("optim:\n", "optim:\n  param_groups: [{match: 'backbone.*', lr_mult: 0.1}]\n")
    )
    config.write_text(text)
    assert main(["train", str(config), *SMALL, f"run.dir={tmp_path / 'run'}"]) == 1
    assert "'backbone.*' match no trainable parameter" in capsys.readouterr().err


def test_max_steps_ends_mid_epoch_with_the_schedule_at_its_floor(tmp_path: Path) -> None:
    # 6 steps per epoch; 10 steps = 2 epochs, the second cut after 4 steps.
    extra = ["train.max_steps=10", "train.epochs=50", "schedule.decay=linear", "schedule.min_lr_ratio=0.1"]
    assert train(tmp_path, *extra) == 0
    payload = load_checkpoint(tmp_path / "checkpoints" / LAST)
    state = payload["train_state"]
    assert state["global_step"] == 10 and state["epoch"] == 1 and state["batch_in_epoch"] == 8
    cfg = load_config(CONFIG, SMALL)
    assert payload["scheduler"]["_last_lr"][0] == pytest.approx(cfg.optim.lr * 0.1, rel=1e-12)  # the floor
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "epoch_0002.pt" not in names  # a partial epoch is not written as a full one
    log = (tmp_path / "train.log").read_text()
    assert "10 optimizer steps = 2 epoch(s) of 6 steps (train.max_steps; the last epoch runs 4 steps" in log
    assert "train.epochs is not used" in log
    assert [r["kind"] for r in read_metrics(tmp_path / "metrics.jsonl")].count("val") == 2


def test_epoch_fraction_intervals_resolve_from_the_loader(tmp_path: Path) -> None:
    # 6 steps per epoch: 0.5ep = every 3 steps within the epoch; last.pt every 0.34ep = 2 steps.
    extra = ["train.log_every=0.5ep", "checkpoint.latest_every=0.34ep", "eval.every=0.5ep", "checkpoint.keep=all"]
    assert train(tmp_path, *extra) == 0
    steps = [r["step"] for r in _train_records(tmp_path)]
    assert steps == [3, 6, 9, 12, 15, 18]
    val_steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
    assert val_steps == [3, 6, 9, 12, 15, 18]
    log = (tmp_path / "train.log").read_text()
    assert "log 0.5ep = every 3 of 6 steps per epoch" in log and "0.34ep = every 2 of 6 steps per epoch" in log
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names.count("epoch_0001.pt") == 1 and "epoch_0003.pt" in names  # keep: all kept every epoch


def test_a_custom_optimizer_and_scheduler_resume_bitwise_after_sigkill(tmp_path: Path) -> None:
    extra = ["task.class_path=port_tasks:StepLRTask"]
    reference = tmp_path / "reference"
    assert train(reference, *extra) == 0
    run_dir = tmp_path / "run"
    assert spawn(run_dir, extra, {"kill_at_step": 11}) == -signal.SIGKILL
    assert train(run_dir, *extra, "--resume", "auto") == 0
    assert_bitwise_equal(final_state(run_dir), final_state(reference))
    assert load_checkpoint(run_dir / "checkpoints" / LAST)["scheduler"]["step_size"] == 6
    assert records(run_dir) == records(reference)


def test_a_bucketing_batch_sampler_resumes_bitwise(tmp_path: Path) -> None:
    extra = ["task.class_path=port_tasks:BucketTask", "train.grad_accum_steps=1"]
    reference = tmp_path / "reference"
    assert train(reference, *extra) == 0
    run_dir = tmp_path / "run"
    assert train(run_dir, *extra, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    assert train(run_dir, *extra, "--resume", "auto") == 0
    assert_bitwise_equal(final_state(run_dir), final_state(reference))


def test_on_epoch_start_is_called_for_every_epoch_including_the_resumed_one(tmp_path: Path) -> None:
    extra = ["task.class_path=port_tasks:EpochHookTask", "data.num_workers=1"]
    EPOCH_LOG.clear()
    assert train(tmp_path, *extra, callbacks=(SignalAtStep(9, signal.SIGTERM),)) == 143
    assert EPOCH_LOG == [0, 1]
    assert train(tmp_path, *extra, "--resume", "auto") == 0
    assert EPOCH_LOG == [0, 1, 1, 2]  # the resumed epoch 2 (index 1) is announced again
    log = (tmp_path / "train.log").read_text()
    # The dataset flag reaches the (non-persistent) workers: the first batch report saw augmented = 1.
    assert "augmented" in log


def test_numpy_batches_get_the_first_batch_report(tmp_path: Path) -> None:
    assert train(tmp_path, "task.class_path=port_tasks:NumpyBatchTask", "train.epochs=1") == 0
    assert "x_np" in (tmp_path / "train.log").read_text().split("First-batch data report")[1].split("epoch 1")[0]


def test_fp16_features_collated_outside_bf16_autocast_in_evaluation(tmp_path: Path) -> None:
    assert train(tmp_path, "task.class_path=port_tasks:Fp16FeatureTask", "train.amp=bf16", "train.epochs=1") == 0
    assert "val mse" in (tmp_path / "train.log").read_text()


def test_export_loads_into_a_plain_model_with_identical_outputs(tmp_path: Path) -> None:
    assert train(tmp_path / "run", "train.epochs=1") == 0
    checkpoint = tmp_path / "run" / "checkpoints" / LAST
    script = tmp_path / "plain.py"
    write_plain_loader_script(script)
    cfg = load_config(CONFIG, SMALL)
    task = build_task(cfg)
    model = task.build_model()
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    expected = model(torch.linspace(-1, 1, 16).reshape(2, 8)).detach().tolist()
    for suffix in (".pt", ".safetensors"):
        out = tmp_path / f"weights{suffix}"
        assert main(["export", str(checkpoint), "--out", str(out)]) == 0
        sidecar = json.loads(out.with_name(out.name + ".json").read_text())
        assert sidecar["train_state"]["global_step"] == 6 and sidecar["config"]["task"]["hidden"] == 16
        printed = subprocess.run(
            [sys.executable, str(script), str(out)], capture_output=True, text=True, check=True, cwd=ROOT
        )
        assert eval(printed.stdout) == expected


def test_eval_export_and_predict_use_the_task_without_a_trainer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from port_tasks import PredictingTask

    PredictingTask.eval_modes.clear()
    extra = ["task.class_path=port_tasks:PredictingTask", "train.epochs=1"]
    assert train(tmp_path / "run", *extra) == 0
    assert PredictingTask.eval_modes and set(PredictingTask.eval_modes) == {(False, False)}  # no_grad, eval mode
    assert (tmp_path / "run" / "predictions" / "per_sample.json").is_file()  # written after the run's evaluation
    findings = read_finding_lines(tmp_path / "run" / "findings.jsonl")
    assert any(f.get("id") == "eval.example" for f in findings)  # the evaluator's finding reached the doctor
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    base = [CONFIG, *SMALL, *extra, f"--checkpoint={best}"]
    during_training = len(PredictingTask.eval_modes)
    assert main(["eval", *base, "--export", str(tmp_path / "export"), "--out", str(tmp_path / "eval.json")]) == 0
    assert len(PredictingTask.eval_modes) > during_training
    assert set(PredictingTask.eval_modes) == {(False, False)}  # `trainwell eval` too
    rows = json.loads((tmp_path / "export" / "per_sample.json").read_text())
    assert [r["index"] for r in rows] == list(range(32))  # the whole validation set, in index order
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["outputs"] == [str(tmp_path / "export" / "per_sample.json")]
    assert summary["metrics"]["mse"] == pytest.approx(sum(r["sq"] for r in rows) / 32)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([[0.1] * 8, [0.0] * 8]))
    capsys.readouterr()
    assert main(["predict", *base, "--input", str(inputs), "--out", str(tmp_path / "pred")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["y"]) == 2 and len(printed["y"][0]) == 2
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text()) == printed
    assert main(["predict", CONFIG, *SMALL, f"--checkpoint={best}", "--input", str(inputs)]) == 2  # no predict()
    assert "does not implement predict()" in capsys.readouterr().err
