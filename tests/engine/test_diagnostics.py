"""The doctor's pure checks on hand-built metrics histories, batches and models."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainwell.config.schema import ExperimentConfig
from trainwell.doctor.batch import batch_tensor_stats, check_batch_values, check_train_mode, format_batch_report
from trainwell.doctor.checks import (
    RunContext,
    Thresholds,
    check_clipping,
    check_grad_spikes,
    check_history,
    check_input_pipeline,
    check_loss_balance,
    check_loss_progress,
    check_skipped_steps,
    check_update_size,
    check_validation,
)
from trainwell.doctor.findings import Finding, FindingSet, format_diagnosis

TH = Thresholds()


def train_records(losses, *, every=5, **columns):
    """Train records at steps every, 2·every, …; ``columns`` are per-record lists or constants."""
    out = []
    for i, loss in enumerate(losses):
        record = {"kind": "train", "epoch": 1, "step": every * (i + 1), "loss": loss, "loss/main": loss}
        for key, value in columns.items():
            record[key] = value[i] if isinstance(value, list) else value
        out.append(record)
    return out


# -- loss progress -------------------------------------------------------------------------------------
def test_flat_loss_is_flagged_and_blames_a_tiny_update() -> None:
    losses = [6.7, 6.65, 6.24, 6.7, 6.25, 6.44, 6.4, 6.5, 6.6]
    records = train_records(losses, update_ratio=1.5e-5)
    finding = check_loss_progress(records, RunContext(total_steps=45, lr=3e-6), TH)
    assert finding is not None and finding.id == "loss.not_decreasing"
    assert "learning rate" in finding.fix and "3e-06" in finding.fix
    assert finding.step == 30  # window: 30 % of 45 steps → at least 6 log lines, steps 5–30


def test_falling_loss_is_not_flagged() -> None:
    losses = [6.6, 6.1, 4.9, 4.1, 3.1, 2.5, 1.8, 1.5, 1.4]
    assert check_loss_progress(train_records(losses), RunContext(total_steps=45), TH) is None


def test_loss_progress_waits_for_the_window_unless_the_run_ended() -> None:
    flat = train_records([5.0] * 6)  # steps 5…30 of a planned 1000: the window ends at step 300
    ctx = RunContext(total_steps=1000)
    assert check_loss_progress(flat, ctx, TH) is None
    assert check_loss_progress(flat, ctx, TH, final=True) is not None


def test_loss_progress_skips_losses_that_can_be_negative() -> None:
    assert check_loss_progress(train_records([-1.0] * 9), RunContext(total_steps=45), TH) is None


def test_the_window_starts_after_a_long_warmup() -> None:
    # Flat during a 40-step warmup, falling after it: judged up to step 40 + 10 % of 100 = 50.
    losses = [5.0] * 8 + [4.0, 3.0, 2.0, 1.5]
    assert check_loss_progress(train_records(losses), RunContext(total_steps=100, warmup_steps=40), TH) is None


# -- loss balance --------------------------------------------------------------------------------------
def _components(values):
    return [
        {"kind": "train", "step": 5 * (i + 1), "loss": sum(v.values()), **{f"loss/{k}": x for k, x in v.items()}}
        for i, v in enumerate(values)
    ]


def test_a_component_orders_of_magnitude_larger_is_flagged() -> None:
    records = _components([{"mse": 6.4, "l1": 2090.0}, {"mse": 5.9, "l1": 1900.0}, {"mse": 4.7, "l1": 1770.0}])
    finding = check_loss_balance(records, TH)
    assert finding is not None and "'l1'" in finding.title
    assert "327×" in finding.evidence


def test_balanced_components_and_near_zero_priors_are_not_flagged() -> None:
    healthy = _components([{"mse": 6.4, "l1": 0.21}] * 3)  # 30×: the regression example
    assert check_loss_balance(healthy, TH) is None
    hand = _components([{"joint_3d": 95.0, "aux": 52.0, "keypoint_2d": 14.6, "bone_prior": 0.45}] * 3)
    assert check_loss_balance(hand, TH) is None  # compared with the second largest, not the smallest


def test_loss_balance_waits_for_the_first_records() -> None:
    one = _components([{"mse": 1.0, "l1": 1000.0}])
    assert check_loss_balance(one, TH) is None
    assert check_loss_balance(one, TH, final=True) is not None


# -- validation ------------------------------------------------------------------------------------------
def _val(step, **metrics):
    return {"kind": "val", "epoch": step // 16, "step": step, "num_samples": 101, **metrics}


def test_identical_metrics_while_training_moves_is_flagged() -> None:
    train = train_records([6.6, 6.1, 4.9, 4.1, 3.1, 2.5], every=5)
    val = [_val(16, mse=4.540139, mae=1.66), _val(32, mse=4.540139, mae=1.66)]
    finding = check_validation(train, val, TH)
    assert finding is not None and finding.id == "val.stuck" and finding.severity == "error"
    assert finding.step == 32


def test_identical_metrics_without_training_in_between_are_fine() -> None:
    train = train_records([5.0, 5.0, 5.0, 5.0, 5.0, 5.0], every=5)
    assert check_validation(train, [_val(16, mse=1.0), _val(32, mse=1.0)], TH) is None  # loss did not move
    assert check_validation(train, [_val(30, mse=1.0), _val(30, mse=1.0)], TH) is None  # nothing in between
    assert check_validation(train_records([6, 5, 4, 3, 2, 1]), [_val(16, mse=1.0), _val(32, mse=0.999)], TH) is None


# -- input pipeline ----------------------------------------------------------------------------------------
def test_waiting_for_data_is_flagged_with_advice_that_fits() -> None:
    records = train_records([1.0] * 6, data_wait_share=0.85, steps_per_s=55.0)
    finding = check_input_pipeline(records, RunContext(num_workers=0), TH, cores=16)
    assert finding is not None and "85%" in finding.evidence and "15 ms" in finding.evidence
    assert "data.num_workers" in finding.fix and "8" in finding.fix
    cuda = check_input_pipeline(records, RunContext(num_workers=4, pin_memory=False, device="cuda"), TH)
    assert cuda is not None and "pin_memory" in cuda.fix and "precompute" in cuda.fix


def test_fast_steps_with_a_large_wait_share_are_not_flagged() -> None:
    # 45 % of a 1 ms step (the regression example on a CPU) is not worth a warning.
    records = train_records([1.0] * 6, data_wait_share=0.45, steps_per_s=778.0)
    assert check_input_pipeline(records, RunContext(), TH) is None
    # The first interval includes start-up and is left out.
    first_slow = train_records([1.0] * 6, data_wait_share=[0.9] + [0.02] * 5, steps_per_s=10.0)
    assert check_input_pipeline(first_slow, RunContext(), TH) is None


# -- gradients and updates -------------------------------------------------------------------------------
def test_repeated_grad_norm_spikes_are_flagged_but_one_is_not() -> None:
    norms = [2.0, 2.1, 1.9, 2.0, 2.2, 2.0, 2.1, 2.0]
    one = train_records([1.0] * 8, grad_norm=norms, grad_norm_max=[n if i != 6 else 40.0 for i, n in enumerate(norms)])
    assert check_grad_spikes(one, TH) is None
    two = train_records(
        [1.0] * 8, grad_norm=norms, grad_norm_max=[40.0 if i in (5, 7) else n for i, n in enumerate(norms)]
    )
    finding = check_grad_spikes(two, TH)
    assert finding is not None and finding.step == 40 and "2 log intervals" in finding.evidence


def test_nan_grad_norms_do_not_count_as_spikes() -> None:
    records = train_records([1.0] * 8, grad_norm=[2.0] * 6 + [math.nan, 2.0], grad_norm_max=[2.0] * 6 + [math.nan, 2])
    assert check_grad_spikes(records, TH) is None


@pytest.mark.parametrize(
    ("ratios", "flagged"),
    [([0.35, 0.11, 0.05], True), ([0.45, 0.02, 0.01], True), ([0.15, 0.02, 0.01], False), ([0.02, 0.019, 0.01], False)],
)
def test_large_updates(ratios, flagged) -> None:
    finding = check_update_size(train_records([1.0] * 3, update_ratio=ratios), RunContext(lr=0.3), TH)
    assert (finding is not None) == flagged
    if flagged:
        assert finding.id == "optim.large_updates" and "0.3" in finding.fix


def test_always_clipped_is_an_sgd_finding_only() -> None:
    records = train_records([1.0] * 4, grad_norm=95.0, clip_rate=1.0)
    assert check_clipping(records, RunContext(clip_grad_norm=1.0, optimizer="adamw"), TH) is None
    finding = check_clipping(records, RunContext(clip_grad_norm=1.0, optimizer="sgd"), TH)
    assert finding is not None and "95×" in finding.evidence
    mild = train_records([1.0] * 4, grad_norm=3.0, clip_rate=1.0)
    assert check_clipping(mild, RunContext(clip_grad_norm=1.0, optimizer="sgd"), TH) is None


def test_skipped_steps_are_counted() -> None:
    records = train_records([1.0] * 3, nonfinite_skipped=[0.0, 2.0, 1.0])
    finding = check_skipped_steps(records)
    assert finding is not None and finding.evidence.startswith("3 step(s) skipped") and finding.step == 15


def test_records_with_a_non_finite_loss_are_left_out() -> None:
    records = train_records([6.6, 6.1, 4.9, 4.1, 3.1, math.nan])
    assert check_history(records, RunContext(total_steps=30), final=True) == []


# -- batches -----------------------------------------------------------------------------------------------
def test_batch_stats_match_numpy_and_count_non_finite_values() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), -6.0]])
    batch = {"inputs": {"x": x}, "labels": [torch.tensor([1, 2, 3])]}
    stats = {s.name: s for s in batch_tensor_stats(batch)}
    assert set(stats) == {"inputs.x", "labels[0]"}
    finite = np.array([1.0, 2.0, 4.0, -6.0])
    s = stats["inputs.x"]
    assert (s.shape, s.dtype, s.num_nan, s.num_inf) == ((2, 3), "float32", 1, 1)
    assert (s.min, s.max) == (-6.0, 4.0)
    assert s.mean == pytest.approx(finite.mean()) and s.std == pytest.approx(finite.std())
    assert stats["labels[0]"].mean == pytest.approx(2.0)
    findings = check_batch_values(list(stats.values()), batch_index=1)
    assert [f.id for f in findings] == ["data.nonfinite"] and "batch 2" in findings[0].evidence
    assert "inputs.x" in findings[0].evidence
    report = format_batch_report([list(stats.values())])
    assert any(line.strip().startswith("inputs.x") and line.endswith("1/1") for line in report)


def test_clean_batches_raise_nothing() -> None:
    assert check_batch_values(batch_tensor_stats({"x": torch.randn(4, 3)}), 0) == []


# -- model mode ------------------------------------------------------------------------------------------
def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.Linear(4, 1))


def test_train_mode_checks() -> None:
    model = _net().train()
    assert check_train_mode(model, 10) is None
    model.eval()
    whole = check_train_mode(model, 10)
    assert whole is not None and whole.severity == "error" and "2 of 2" in whole.evidence
    model.train()
    model[1].eval()  # frozen BatchNorm: maybe on purpose
    part = check_train_mode(model, 10)
    assert part is not None and part.severity == "warning" and "'1' (BatchNorm1d)" in part.evidence


# -- findings ------------------------------------------------------------------------------------------------
def test_finding_set_ignores_ids_and_prefixes_and_keeps_the_latest() -> None:
    found = FindingSet(ignore=("grad", "model.eval_mode"))
    make = lambda i, step=1: Finding(i, "warning", "t", "e", "f", step)  # noqa: E731
    assert not found.add(make("grad.norm_spikes")) and not found.add(make("model.eval_mode"))
    assert found.add(make("gradual.thing"))  # a prefix is a whole dotted part
    assert found.add(make("loss.not_decreasing")) and not found.add(make("loss.not_decreasing", 9))
    assert {f.id: f.step for f in found.all()} == {"gradual.thing": 1, "loss.not_decreasing": 9}


def test_finding_round_trip_and_diagnosis_text() -> None:
    error = Finding("val.stuck", "error", "Stuck", "numbers", "do this", 32)
    assert Finding.from_dict(error.to_dict()) == error
    lines = format_diagnosis([Finding("a.b", "warning", "W", "e", "f"), error], ["loss 1 → 0.5"])
    assert lines[0] == "Diagnosis (training doctor): 1 error(s), 1 warning(s)"
    assert lines[1].startswith("[ERROR] val.stuck (step 32)")  # the most severe first
    assert lines[-1] == "Run summary: loss 1 → 0.5"
    assert format_diagnosis([])[0].endswith("no problems found")


def test_run_context_from_config() -> None:
    cfg = ExperimentConfig()
    cfg.train.clip_grad_norm, cfg.train.amp = 1.0, "bf16"
    cfg.optim.name, cfg.optim.lr = "sgd", 0.1
    cfg.data.num_workers, cfg.data.pin_memory = 3, False
    cfg.schedule.warmup_steps = 7
    ctx = RunContext.from_config(cfg, total_steps=48, log_every=5, device="cpu", world_size=1)
    assert (ctx.total_steps, ctx.log_every, ctx.clip_grad_norm, ctx.optimizer, ctx.lr) == (48, 5, 1.0, "sgd", 0.1)
    assert (ctx.num_workers, ctx.pin_memory, ctx.warmup_steps, ctx.amp) == (3, False, 7, "bf16")
