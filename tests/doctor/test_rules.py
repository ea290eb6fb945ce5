"""The doctor's reference-based rules on hand-built histories: each fires on the numbers it is about, says them, and
stays silent on the healthy side of its bound."""

from __future__ import annotations

from typing import Any

import pytest

from trainwell.doctor.checks import RunContext, Thresholds, check_history, diagnose
from trainwell.doctor.divergence import (
    check_divergence,
    check_frozen,
    check_lr_too_low,
    check_weight_decay,
    consolidate,
)
from trainwell.doctor.findings import Finding
from trainwell.doctor.validation import check_plausible, check_val_diverged

TH = Thresholds()
HAND = {"mpjpe": {"unit": "mm", "higher_is_better": False, "plausible": [0.0, 1000.0]}}
PCK = {"pck": {"unit": "", "higher_is_better": True, "plausible": [0.0, 1.0]}}


def train(losses: list[float], every: int = 8, **values: Any) -> list[dict[str, Any]]:
    return [{"kind": "train", "step": every * (i + 1), "loss": v, **values} for i, v in enumerate(losses)]


def ref(**reference: float) -> RunContext:
    """A context with the reference values the live doctor measures (loss at initialisation, …)."""
    return RunContext(reference=reference)


def val(values: list[float], name: str = "mpjpe", every: int = 8) -> list[dict[str, Any]]:
    return [{"kind": "val", "step": every * (i + 1), name: v} for i, v in enumerate(values)]


# -- loss.diverged ------------------------------------------------------------------------------------------
def test_a_loss_far_above_the_untrained_models_is_divergence_even_on_three_log_lines() -> None:
    # The issue's case: the loss *falls* 94 % over the logged lines, but from 1 200× the untrained model's loss.
    records = train([2.748e5, 8.59e4, 1.543e4])
    reference = {"loss_init": 227.5, "loss_init_std": 2.1, "update_ratio_first": 8.1}
    finding = check_divergence(records, RunContext(lr=5.0, warmup_steps=8, reference=reference), TH)
    assert finding is not None and finding.severity == "error" and "learning rate" in finding.title
    assert "227.5" in finding.evidence and "2.748e+05" in finding.evidence and "3 of 3" in finding.evidence
    assert "optim.lr (now 5.0)" in finding.fix


def test_a_loss_within_an_order_of_magnitude_or_within_its_noise_is_not_divergence() -> None:
    assert check_divergence(train([50.0, 8.0]), ref(loss_init=6.0, loss_init_std=0.5), TH) is None
    # A noisy loss at initialisation (std 10) needs a rise of 10 std: 70 is 11.7× the init but within 6.4 std.
    assert check_divergence(train([70.0, 8.0]), ref(loss_init=6.0, loss_init_std=10.0), TH) is None
    assert check_divergence(train([120.0]), ref(loss_init=6.0, loss_init_std=10.0), TH) is not None
    # Without the reference (an older run), or with a loss that can be negative: no judgement.
    assert check_divergence(train([1e9]), RunContext(), TH) is None
    assert check_divergence(train([1e9]), ref(loss_init=-1.0), TH) is None


def test_without_a_measured_spread_only_a_loss_that_stays_high_is_divergence() -> None:
    # A first batch of one sample has no halves: its loss is one draw (here a lucky 0.02 against a typical 1).
    # A spike that the run leaves is then not judged; a loss still ≥ 10× at the latest line is.
    lucky = ref(loss_init=0.02)
    assert check_divergence(train([1.2, 0.9, 0.3, 0.001]), lucky, TH) is None
    finding = check_divergence(train([1.2, 3.0, 5.0]), lucky, TH)
    assert finding is not None and "one sample, so no spread" in finding.evidence
    # A measured spread of 0 is a measurement: the rule as before.
    assert check_divergence(train([1.2, 0.001]), ref(loss_init=0.02, loss_init_std=0.0), TH) is not None


# -- optim.lr_too_low ---------------------------------------------------------------------------------------
def test_a_run_that_cannot_move_its_weights_blames_the_learning_rate() -> None:
    records = train([227.1, 227.1, 227.1], grad_norm=251.0, update_ratio=4.7e-8)
    finding = check_lr_too_low(records, RunContext(total_steps=24, lr=5e-9), TH)
    assert finding is not None and "learning rate is too low" in finding.title
    assert "24 planned steps" in finding.evidence and "1.1e-06" in finding.evidence  # 4.7e-8 × 24
    assert "optim.lr (now 5e-09)" in finding.fix


def test_healthy_update_sizes_and_zero_gradients() -> None:
    healthy = train([6.0, 4.0, 2.0], update_ratio=5e-3)
    assert check_lr_too_low(healthy, RunContext(total_steps=48), TH) is None  # can move 0.24 of ‖w‖
    dead = train([6.0, 6.0], update_ratio=0.0, grad_norm=0.0)
    finding = check_lr_too_low(dead, RunContext(total_steps=48), TH)
    assert finding is not None and "gradients are zero" in finding.title


def test_the_updates_of_a_warmup_from_zero_are_not_judged() -> None:
    # Step 1 of a warmup from zero moves nothing on purpose (the ViECap schedule): no finding until after the warmup,
    # and the same tiny updates after the warmup are flagged.
    warming = [{"kind": "train", "step": 1, "loss": 6.0, "update_ratio": 0.0}]
    warming += train([5.9, 5.8], every=40, update_ratio=2e-7)
    assert check_lr_too_low(warming, RunContext(total_steps=1000, warmup_steps=100), TH) is None
    after = [*warming, *train([5.8, 5.8], every=200, update_ratio=2e-7)]
    assert check_lr_too_low(after, RunContext(total_steps=1000, warmup_steps=100), TH) is not None


# -- configuration rules --------------------------------------------------------------------------------
def test_weight_decay_that_erases_the_weights_is_flagged_with_its_half_life() -> None:
    finding = check_weight_decay(train([1.0]), RunContext(lr=3e-3, weight_decay=10.0), TH)
    assert finding is not None and "3.0%" in finding.evidence and "every 23 steps" in finding.evidence
    for wd in (1e-4, 0.05, 0.1):
        assert check_weight_decay(train([1.0]), RunContext(lr=1e-2, weight_decay=wd), TH) is None


def test_a_mostly_frozen_model_is_flagged() -> None:
    assert check_frozen(ref(frozen_share=0.97), TH) is not None
    assert check_frozen(ref(frozen_share=0.2), TH) is None


# -- validation metrics ---------------------------------------------------------------------------------
def test_a_metric_outside_the_declared_range_is_an_error_with_the_numbers() -> None:
    finding = check_plausible(val([4.3e7, 2.1e6, 2.9e4]), RunContext(metric_specs=HAND))
    assert finding is not None and finding.severity == "error" and "'mpjpe'" in finding.title
    assert "4.3e+07 mm" in finding.evidence and "0–1000 mm" in finding.evidence and "3 of 3" in finding.evidence
    assert check_plausible(val([90.0, 40.0]), RunContext(metric_specs=HAND)) is None
    assert check_plausible(val([4.3e7]), RunContext()) is None  # no declaration, no judgement
    assert check_plausible([], RunContext(metric_specs=HAND)) is None  # before the first evaluation
    # An early evaluation outside the range that the run recovered from is not a finding (the latest decides).
    assert check_plausible(val([2632.0, 81.0, 58.0]), RunContext(metric_specs=HAND)) is None


@pytest.mark.parametrize(
    ("values", "specs", "name", "flagged"),
    [
        ([100.0, 50.0, 600.0], HAND, "mpjpe", True),  # 12× the best and worse than the start
        ([100.0, 5.0, 40.0], HAND, "mpjpe", False),  # 8× the best: not an order of magnitude
        ([100.0, 5.0, 90.0], HAND, "mpjpe", False),  # 18× the best but still better than the first evaluation
        ([0.3, 0.6, 0.02], PCK, "pck", True),  # a score fallen to 1/30 of its best, below where it started
        ([0.3, 0.6, 0.1], PCK, "pck", False),
    ],
)
def test_a_metric_moving_away_from_its_best(values: list[float], specs: dict, name: str, flagged: bool) -> None:
    finding = check_val_diverged(val(values, name), RunContext(metric_specs=specs), TH)
    assert (finding is not None) == flagged


# -- one finding per cause ----------------------------------------------------------------------------------
def test_symptoms_are_folded_into_their_cause_with_their_numbers() -> None:
    cause = Finding("loss.diverged", "error", "diverged", "loss 1e5 vs 227", "lower lr", 8)
    symptom = Finding("val.implausible", "error", "mpjpe implausible", "mpjpe 4.3e7 mm", "check", 8)
    other = Finding("data.input_bound", "warning", "slow", "60% waiting", "workers", 8)
    shown, merged = consolidate([cause, symptom, other])
    assert [f.id for f in shown] == ["loss.diverged", "data.input_bound"] and merged == {
        "val.implausible": "loss.diverged"
    }
    assert "mpjpe 4.3e7 mm" in shown[0].evidence and "[val.implausible]" in shown[0].evidence
    assert [f.id for f in consolidate([symptom, other])[0]] == ["val.implausible", "data.input_bound"]


def test_a_task_input_error_explains_a_run_that_cannot_learn() -> None:
    cause = Finding("captioning.labels_not_shifted", "error", "not shifted", "97% copy their input", "shift", 0)
    stuck = Finding("val.stuck", "warning", "stuck", "cider_d 0.0 for 3 evaluations", "check", 40)
    worse = Finding("val.diverged", "warning", "diverged", "cider_d away from its best", "check", 40)
    flat = Finding("loss.not_decreasing", "warning", "flat", "loss 2.1 → 2.1", "check", 40)
    shown, merged = consolidate([cause, stuck, worse, flat])
    assert [f.id for f in shown] == ["captioning.labels_not_shifted"]
    assert merged == dict.fromkeys(("val.stuck", "val.diverged", "loss.not_decreasing"), cause.id)
    assert "cider_d 0.0 for 3 evaluations" in shown[0].evidence and "loss 2.1 → 2.1" in shown[0].evidence
    # without the input error each symptom stands for itself (val.stuck still takes val.diverged in)
    assert [f.id for f in consolidate([stuck, worse, flat])[0]] == ["val.stuck", "loss.not_decreasing"]


def test_the_issue_case_gives_one_error_naming_the_learning_rate() -> None:
    """The numbers the issue reports for tiny.yaml at LR ×1000 (3 epochs), through every check."""
    records = [
        *train([2.748e5, 8.589e4, 1.543e4]),
        *val([4.345e7, 2.146e6, 2.916e4]),
    ]
    for r, ratio in zip(records[:3], (0.195, 0.031, 0.0016), strict=True):
        r.update(update_ratio=ratio, grad_norm=1e4)
    reference = {"loss_init": 227.5, "loss_init_std": 2.1}
    ctx = RunContext(total_steps=24, log_every=8, warmup_steps=8, lr=5.0, metric_specs=HAND, reference=reference)
    shown = diagnose(check_history(records, ctx, final=True))
    assert [(f.id, f.severity) for f in shown] == [("loss.diverged", "error")]
    assert "[val.implausible]" in shown[0].evidence


def test_history_checks_run_every_line_early_and_sparsely_on_long_runs() -> None:
    from trainwell.doctor.live import TrainingDoctor

    doctor = object.__new__(TrainingDoctor)  # only the record count matters here
    doctor.records = []
    due = []
    for _ in range(2000):
        doctor.records.append({})
        due.append(doctor._history_due())
    assert all(due[:64])  # a short run is checked at every log line
    assert sum(due) < 64 + 64 * 6  # a long one a bounded number of times per doubling (~64 each)
    gaps = [
        j - i
        for i, j in zip([k for k, d in enumerate(due) if d], [k for k, d in enumerate(due) if d][1:], strict=False)
    ]
    assert max(gaps) <= 2000 // 64 + 1  # never more than ~1.5 % of the run between two checks


def test_the_run_summary_names_the_headline_metrics_before_grouped_ones() -> None:
    from trainwell.doctor.checks import summarize_history

    record = {"kind": "val", "step": 8, "kitti/Car_bbox_easy_R11_70": 0.5, "mAP_bev": 0.25, "recall_3d_50": 0.75}
    lines = summarize_history([{"kind": "train", "step": 8, "loss": 1.0}, record], RunContext())
    assert lines[-1] == "1 evaluations; last: mAP_bev 0.25, recall_3d_50 0.75"
    only_grouped = {"kind": "val", "step": 8, "freihand/pa_mpjpe_mm": 7.5}
    assert summarize_history([only_grouped], RunContext())[-1] == "1 evaluations; last: freihand/pa_mpjpe_mm 7.5"


def test_the_running_median_is_statistics_median_at_every_length() -> None:
    import random
    import statistics

    from trainwell.doctor.context import RunningMedian

    rng = random.Random(0)
    values = [rng.choice([rng.random(), 1.0, 0.5, rng.lognormvariate(0, 3)]) for _ in range(400)]
    running = RunningMedian()
    for i, value in enumerate(values):
        running.add(value)
        assert running.median() == statistics.median(values[: i + 1]) and len(running) == i + 1


def test_grad_spikes_against_the_rule_written_out() -> None:
    import random
    import statistics

    from trainwell.doctor.checks import check_grad_spikes

    rng = random.Random(1)
    records = [
        {"kind": "train", "step": 10 * (i + 1), "loss": 1.0, "grad_norm": g, "grad_norm_max": g * rng.choice([1, 30])}
        for i, g in enumerate(rng.lognormvariate(0, 0.3) for _ in range(300))
    ]
    expected = [
        r["step"]
        for k, r in enumerate(records)
        if k >= TH.spike_min_history
        and r["grad_norm_max"] >= TH.spike_factor * statistics.median(x["grad_norm"] for x in records[:k])
    ]
    finding = check_grad_spikes(records, TH)
    assert len(expected) >= 2 and finding is not None and finding.step == expected[-1]
    assert f"{len(expected)} log intervals" in finding.evidence
