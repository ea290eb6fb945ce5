"""The doctor's history checks: pure functions from what a run already records to :class:`Finding` s.

Their input is the metrics history — the ``metrics.jsonl`` records (``kind`` ``"train"`` at logging steps,
``"val"`` after evaluations). :func:`check_history` runs every check; the live doctor (:mod:`trainwell.doctor.live`)
calls it at logging steps and ``trainwell doctor RUN_DIR`` (:mod:`trainwell.doctor.offline`) on the file, so both
see the same findings. Every threshold is a field of :class:`Thresholds`, documented there and in ``docs/doctor.md``.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from trainwell.doctor.context import (
    RunContext,
    RunningMedian,
    Thresholds,
    _finite,
    loss_components,
    split_records,
    val_metrics,
)
from trainwell.doctor.divergence import (
    check_divergence,
    check_frozen,
    check_lr_too_low,
    check_weight_decay,
    consolidate,
)
from trainwell.doctor.findings import Finding
from trainwell.doctor.validation import check_plausible, check_val_diverged
from trainwell.engine.losses import LOSS_PREFIX, loss_key

__all__ = [
    "LOSS_PREFIX",
    "RunContext",
    "Thresholds",
    "check_history",
    "loss_components",
    "loss_key",
    "split_records",
    "summarize_history",
    "val_metrics",
]


def _fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _slope_standard_error(xs: Sequence[float], ys: Sequence[float], slope: float) -> float:
    """Standard error of the least-squares slope (0 with fewer than 3 points: no residual degrees of freedom)."""
    if len(xs) < 3:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True)) / (len(xs) - 2)
    return 0.0 if den == 0 else (residual / den) ** 0.5


def loss_window_end(ctx: RunContext, th: Thresholds) -> int | None:
    """Last step of the early window ``loss.not_decreasing`` judges (``None``: the planned length is unknown)."""
    if ctx.total_steps is None:
        return None
    return max(int(th.loss_window_fraction * ctx.total_steps), ctx.warmup_steps + int(0.1 * ctx.total_steps))


def _early_loss_window(
    train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds, final: bool
) -> list[Mapping[str, Any]] | None:
    """The log lines of the early window :func:`check_loss_progress` judges, or ``None`` while it is incomplete.

    Judging a window that is still filling would flag every run in its first log lines, so the check waits.
    """
    end = loss_window_end(ctx, th)
    window = [r for r in train if end is not None and r["step"] <= end]
    if len(window) < th.loss_window_min_records:
        # Sparse logging, a short run or an unknown length: the first lines, once there are enough.
        if len(train) < th.loss_window_min_records:
            return None
        return list(train[: th.loss_window_min_records])
    if not final and train[-1]["step"] < end:  # type: ignore[operator]
        return None  # the window is not complete yet
    return window


def _not_decreasing_fix(ratio: float | None, ctx: RunContext, th: Thresholds) -> str:
    """What to do about a loss that does not fall, told apart by ``ratio``, the median update ‖Δw‖/‖w‖.

    Tiny updates point at the learning rate, healthy ones at the data; without the ratio (not logged), both.
    """
    if ratio is not None and ratio < th.update_ratio_low:
        return (
            f"The updates are tiny (‖Δw‖/‖w‖ {ratio:.1e}; healthy runs show about 1e-3–1e-2): the learning rate "
            f"(optim.lr={ctx.lr}) is probably far too low — try 10–1000× higher, and check schedule.warmup_steps."
        )
    if ratio is not None:
        # The optimizer moves the weights at a healthy rate and the loss still does not fall: the data, not the
        # learning rate, is the suspect (targets that cannot be predicted from the inputs).
        return (
            f"The weights move normally (‖Δw‖/‖w‖ {ratio:.1e} per step), so the learning rate is not the cause: check "
            "that the targets belong to the inputs (labels shuffled or misaligned against the inputs, an "
            "augmentation applied to the input but not the label — the first-batch report above), that the loss "
            "is not detached from the model's output, and the task's check_batch findings. If this run fine-tunes "
            "an already converged model, this is expected: add 'loss.not_decreasing' to diagnostics.ignore."
        )
    return (
        "Check the learning rate (optim.lr) and warmup first, then that the targets match the inputs "
        "(the first-batch report above), that the loss is not detached from the model's output, and that "
        "the parameters are in the optimizer. If this run fine-tunes an already converged model, "
        "this is expected: add 'loss.not_decreasing' to diagnostics.ignore."
    )


def check_loss_progress(
    train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds, *, final: bool = False
) -> Finding | None:
    """``loss.not_decreasing``: the total loss did not fall meaningfully early in training.

    The window is the first ``loss_window_fraction`` of the planned steps (and at least the warmup plus
    10 %), or the first ``loss_window_min_records`` log lines if it holds fewer; a straight line fitted to
    the total loss over it must fall by ``loss_min_decrease`` of its mean. The check waits until the window
    is complete (``final``: the run has ended).
    """
    window = _early_loss_window(train, ctx, th, final)
    if window is None:
        return None
    losses = [float(r["loss"]) for r in window]
    if min(losses) <= 0:
        return None  # a loss that can be negative has no relative scale
    steps = [float(r["step"]) for r in window]
    mean = statistics.fmean(losses)
    slope = _fit_slope(steps, losses)
    drop = -slope * (steps[-1] - steps[0]) / mean
    # The log lines are means over batches and carry their noise: the fitted drop has a standard error, and the
    # loss counts as "not decreasing" only if even drop + 1 standard error stays below the bound. On the point
    # estimate alone, a run whose true decrease sits near the bound would be flagged half the time.
    spread = _slope_standard_error(steps, losses, slope) * (steps[-1] - steps[0]) / mean
    if drop + spread >= th.loss_min_decrease:
        return None
    ratios = [float(r["update_ratio"]) for r in window if _finite(r.get("update_ratio"))]
    ratio = statistics.median(ratios) if ratios else None
    evidence = (
        f"over steps {int(steps[0])}–{int(steps[-1])} ({len(window)} log lines) the total loss went "
        f"{losses[0]:.4g} → {losses[-1]:.4g}; a fitted line falls by {drop:.1%} ± {spread:.1%} (one standard "
        f"error) of its mean (flagged when drop + 1 s.e. < {th.loss_min_decrease:.0%})"
    )
    if ratio is not None:
        evidence += f"; each optimizer step changed the weights by {ratio:.1e} of their norm (median)"
    fix = _not_decreasing_fix(ratio, ctx, th)
    return Finding(
        "loss.not_decreasing", "warning", "The loss is not decreasing early in training", evidence, fix, int(steps[-1])
    )


def check_loss_balance(train: Sequence[Mapping[str, Any]], th: Thresholds, *, final: bool = False) -> Finding | None:
    """``loss.component_dominates``: one component is orders of magnitude larger than every other."""
    if len(train) < th.dominance_records and not final:
        return None  # judged on the first few log lines together
    ratios: list[float] = []
    first: dict[str, float] = {}
    for record in train[: th.dominance_records]:
        parts = sorted(((abs(v), k) for k, v in loss_components(record).items()), reverse=True)
        if len(parts) < 2 or parts[1][0] == 0.0:
            return None
        ratios.append(parts[0][0] / parts[1][0])
        first = first or dict(loss_components(record))
    if not ratios:
        return None
    ratio = statistics.median(ratios)
    if ratio < th.dominance_ratio:
        return None
    total = sum(abs(v) for v in first.values())
    big = max(first, key=lambda k: abs(first[k]))
    shares = ", ".join(f"{k} {v:.3g} ({abs(v) / total:.2%})" for k, v in first.items())
    return Finding(
        "loss.component_dominates",
        "warning",
        f"Loss component '{big}' dominates the total by orders of magnitude",
        f"at step {train[0]['step']}: {shares}; '{big}' is {ratio:.0f}× the next largest component "
        f"(median over the first {len(ratios)} log lines; flagged at {th.dominance_ratio:g}×)",
        f"The other components barely reach the gradient. Check the weight of '{big}' (task loss weights; "
        "a factor 1000 is a mm/m slip) and its units; aim for components within ~10× of each other at the start.",
        int(train[0]["step"]),
    )


def _identical(a: Mapping[str, float], b: Mapping[str, float], rtol: float) -> bool:
    keys = set(a) & set(b)
    return bool(keys) and all(abs(a[k] - b[k]) <= rtol * max(1.0, abs(a[k]), abs(b[k])) for k in keys)


def check_validation(
    train: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]], th: Thresholds
) -> Finding | None:
    """``val.stuck``: consecutive evaluations give identical metrics while the training loss moves."""
    for prev, cur in itertools.pairwise(val):
        a, b = val_metrics(prev), val_metrics(cur)
        if not _identical(a, b, th.val_identical_rtol):
            continue
        before = [float(r["loss"]) for r in train if r["step"] <= prev["step"]][-3:]
        between = [float(r["loss"]) for r in train if prev["step"] < r["step"] <= cur["step"]]
        if not before or not between:
            continue  # no training in between: identical metrics are expected
        old, new = statistics.fmean(before), statistics.fmean(between)
        moved = abs(new - old) / max(abs(old), 1e-12)
        if moved <= th.val_train_moved:
            continue
        shown = ", ".join(f"{k} {v:.6g}" for k, v in list(b.items())[:4])
        return Finding(
            "val.stuck",
            "error",
            "Validation metrics do not change while the model trains",
            f"the evaluations at steps {prev['step']} and {cur['step']} gave identical metrics ({shown}) while "
            f"the mean training loss went {old:.4g} → {new:.4g} ({moved:.0%})",
            "Evaluation is not scoring the model being trained: check that eval_step uses the `model` it is "
            "given (not a copy made at start-up or a stale EMA/checkpoint), that predictions are not cached, "
            "and that the evaluator is reset between evaluations and computes from the gathered results.",
            int(cur["step"]),
        )
    return None


def _input_advice(ctx: RunContext, cores: int | None) -> str:
    if ctx.num_workers == 0:
        return (
            f"Batches are loaded in the training process (data.num_workers=0): set data.num_workers to "
            f"{max(2, min(8, cores or 4))} or so, so that loading overlaps the steps."
        )
    advice = f"data.num_workers={ctx.num_workers} workers cannot keep up: "
    if ctx.device.startswith("cuda") and not ctx.pin_memory:
        advice += "set data.pin_memory=true (faster host→GPU copies); "
    return advice + (
        "raise num_workers if cores are idle, and move expensive work out of __getitem__ — "
        "precompute features or decoded samples once, cache them, batch the transforms (__getitems__)."
    )


def check_input_pipeline(
    train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds, cores: int | None = None
) -> Finding | None:
    """``data.input_bound``: a large share of step time is spent waiting for the next batch."""
    usable = [
        r for r in train[1:] if _finite(r.get("data_wait_share")) and _finite(r.get("steps_per_s")) and r["steps_per_s"]
    ]
    if len(usable) < th.data_wait_min_records:
        return None
    share = statistics.median(float(r["data_wait_share"]) for r in usable)
    wait_s = statistics.median(float(r["data_wait_share"]) / float(r["steps_per_s"]) for r in usable)
    if share < th.data_wait_share or wait_s < th.data_wait_min_s:
        return None
    return Finding(
        "data.input_bound",
        "warning",
        "Training waits for data",
        f"{share:.0%} of the wall time of a step is spent waiting for the next batch (median of "
        f"{len(usable)} log lines), {wait_s * 1e3:.0f} ms per step",
        _input_advice(ctx, cores),
        int(usable[-1]["step"]),
    )


def check_grad_spikes(train: Sequence[Mapping[str, Any]], th: Thresholds) -> Finding | None:
    """``grad.norm_spikes``: repeated intervals whose largest grad norm is far above the running median."""
    history = RunningMedian()  # the median of the earlier lines at every line: linear in the run's length
    spikes: list[tuple[int, float, float]] = []
    for record in train:
        norm, peak = record.get("grad_norm"), record.get("grad_norm_max", record.get("grad_norm"))
        if not (_finite(norm) and _finite(peak)):
            continue
        if len(history) >= th.spike_min_history:
            median = history.median()
            if median > 0 and peak >= th.spike_factor * median:
                spikes.append((int(record["step"]), float(peak), median))
        history.add(float(norm))
    if len(spikes) < th.spike_min_count:
        return None
    shown = "; ".join(f"step {s}: {p:.3g} vs median {m:.3g}" for s, p, m in spikes[:4])
    return Finding(
        "grad.norm_spikes",
        "warning",
        "The gradient norm spikes far above its running median",
        f"{len(spikes)} log intervals had a gradient norm ≥ {th.spike_factor:g}× the median of the earlier "
        f"ones ({shown})",
        "Spikes precede divergence: lower optim.lr or lengthen schedule.warmup_steps, set train.clip_grad_norm "
        "(about 2–5× the typical norm), and look for rare bad samples (the first-batch report, data ranges).",
        spikes[-1][0],
    )


def check_update_size(train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``optim.large_updates``: single optimizer steps change the weights by a large fraction of their norm."""
    large = [(int(r["step"]), float(r["update_ratio"])) for r in train if _finite(r.get("update_ratio"))]
    large = [(s, v) for s, v in large if v >= th.update_ratio_high]
    if len(large) < th.update_ratio_high_records and not any(v >= th.update_ratio_extreme for _, v in large):
        return None
    shown = ", ".join(f"step {s}: {v:.2f}" for s, v in large[:4])
    return Finding(
        "optim.large_updates",
        "error",
        "Each optimizer step rewrites a large part of the weights: the learning rate is too high",
        f"‖Δw‖/‖w‖ of one step was ≥ {th.update_ratio_high:g} on {len(large)} log line(s) ({shown}); healthy "
        f"training moves the weights by about 1e-3–1e-2 of their norm per step",
        f"Lower optim.lr (now {ctx.lr}) by 10–100×, or add warmup (schedule.warmup_steps). Gradient clipping "
        "does not help here: adaptive optimizers (Adam) take steps of about `lr` per weight whatever the gradient.",
        large[-1][0],
    )


def check_clipping(train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``grad.always_clipped``: with SGD, clipping at a fraction of the typical norm replaces the learning rate."""
    if ctx.clip_grad_norm is None or ctx.optimizer != "sgd":
        return None
    rates = [float(r["clip_rate"]) for r in train if _finite(r.get("clip_rate"))]
    norms = [float(r["grad_norm"]) for r in train if _finite(r.get("grad_norm"))]
    if len(rates) < 3 or not norms:
        return None
    rate, norm = statistics.fmean(rates), statistics.median(norms)
    if rate < th.sgd_clip_rate or norm < th.sgd_clip_factor * ctx.clip_grad_norm:
        return None
    return Finding(
        "grad.always_clipped",
        "warning",
        "Gradient clipping is active on almost every step and sets the step size",
        f"{rate:.0%} of steps were clipped; median grad norm {norm:.3g} vs train.clip_grad_norm "
        f"{ctx.clip_grad_norm:g} ({norm / ctx.clip_grad_norm:.0f}×)",
        "With SGD a clipped step is lr × clip, so the configured learning rate is not what trains the model: "
        f"raise train.clip_grad_norm to about {2 * norm:.3g} (clip only spikes) and retune optim.lr.",
        int(train[-1]["step"]),
    )


def check_skipped_steps(train: Sequence[Mapping[str, Any]]) -> Finding | None:
    """``train.nonfinite_skipped``: optimizer steps skipped under ``diagnostics.nonfinite=skip``."""
    hit = [(int(r["step"]), float(r["nonfinite_skipped"])) for r in train if _finite(r.get("nonfinite_skipped"))]
    hit = [(s, n) for s, n in hit if n > 0]
    if not hit:
        return None
    total = sum(n for _, n in hit)
    shown = ", ".join(f"{n:.0f} in the log interval ending at step {s}" for s, n in hit[:5])
    return Finding(
        "train.nonfinite_skipped",
        "warning",
        "Optimizer steps were skipped because the gradients were not finite",
        f"{total:.0f} step(s) skipped ({shown}); the loss of those batches is left out of the logged means",
        "Skipping hides a recurring cause: run with diagnostics.nonfinite=stop to stop at the first one and save "
        "its batch (nonfinite_batch.pt), then look for log(0), division by a zero norm, or sqrt of 0 in the loss.",
        hit[-1][0],
    )


def check_history(
    records: Sequence[Mapping[str, Any]],
    ctx: RunContext,
    th: Thresholds | None = None,
    *,
    final: bool = False,
    cores: int | None = None,
) -> list[Finding]:
    """Every history check over ``metrics.jsonl`` records (``final``: the run has ended)."""
    th = th or Thresholds()
    train, val = split_records(records)
    found = [
        check_loss_progress(train, ctx, th, final=final),
        check_loss_balance(train, th, final=final),
        check_validation(train, val, th),
        check_input_pipeline(train, ctx, th, cores),
        check_grad_spikes(train, th),
        check_update_size(train, ctx, th),
        check_clipping(train, ctx, th),
        check_skipped_steps(train),
        check_divergence(train, ctx, th),
        check_lr_too_low(train, ctx, th),
        check_weight_decay(train, ctx, th),
        check_frozen(ctx, th),
        check_plausible(val, ctx),
        check_val_diverged(val, ctx, th),
    ]
    return [f for f in found if f is not None]


def diagnose(findings: Sequence[Finding]) -> list[Finding]:
    """The findings to show: symptoms folded into the causes that explain them (:func:`.divergence.consolidate`)."""
    return consolidate(findings)[0]


def summarize_history(records: Sequence[Mapping[str, Any]], ctx: RunContext) -> list[str]:
    """A few lines of numbers for the Diagnosis section (not findings: facts)."""
    train, val = split_records(records)
    lines: list[str] = []
    if train:
        first, last = float(train[0]["loss"]), float(train[-1]["loss"])
        change = f" ({(last - first) / abs(first):+.0%})" if first else ""
        lines.append(f"loss {first:.4g} → {last:.4g}{change} over steps {train[0]['step']}–{train[-1]['step']}")
        norms = [float(r["grad_norm"]) for r in train if _finite(r.get("grad_norm"))]
        if norms:
            grad = f"grad norm median {statistics.median(norms):.3g}"
            rates = [float(r["clip_rate"]) for r in train if _finite(r.get("clip_rate"))]
            if rates and ctx.clip_grad_norm is not None:
                grad += f", clipped on {statistics.fmean(rates):.0%} of steps at {ctx.clip_grad_norm:g}"
            lines.append(grad)
        waits = [float(r["data_wait_share"]) for r in train[1:] if _finite(r.get("data_wait_share"))]
        if waits:
            lines.append(f"data wait {statistics.median(waits):.0%} of step time (median)")
        ratios = [float(r["update_ratio"]) for r in train if _finite(r.get("update_ratio"))]
        if ratios:
            lines.append(f"update size ‖Δw‖/‖w‖ {ratios[0]:.1e} → {ratios[-1]:.1e}")
        skipped = sum(float(r.get("nonfinite_skipped", 0.0) or 0.0) for r in train)
        if skipped:
            lines.append(f"{skipped:.0f} optimizer steps skipped for non-finite gradients")
    if val:
        metrics = val_metrics(val[-1])
        # The headline names first, as the epoch line shows them; grouped ones (kitti/…, per joint) only if alone.
        shown = [k for k in metrics if "/" not in k] or list(metrics)
        last = ", ".join(f"{k} {metrics[k]:.4g}" for k in shown[:4])
        lines.append(f"{len(val)} evaluations; last: {last}")
    return lines
