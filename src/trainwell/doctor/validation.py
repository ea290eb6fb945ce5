"""Checks on the validation metrics themselves, judged by what the task declares about them
(``Task.metric_specs()``: unit, direction, plausible range), recorded in the run context.

* ``val.implausible`` — a metric outside the range a working model stays within (a hand's MPJPE beyond 1 m);
* ``val.diverged`` — a metric an order of magnitude worse than its best, and worse than where it started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainwell.doctor.context import RunContext, Thresholds, val_metrics
from trainwell.doctor.findings import Finding


def _spec_range(spec: Mapping[str, Any]) -> tuple[float, float] | None:
    plausible = spec.get("plausible")
    if plausible is None:
        return None
    lo, hi = plausible
    return float(lo), float(hi)


def check_plausible(val: Sequence[Mapping[str, Any]], ctx: RunContext) -> Finding | None:
    """``val.implausible``: the latest evaluation gave a metric outside the task's declared plausible range.

    The range is the task's statement of what no working model can exceed (e.g. ``plausible=(0, 1000)`` mm for a
    hand's joint error: a prediction a metre off is not a hand), so one evaluation outside it is enough.
    """
    if not val:
        return None
    outside: list[tuple[str, int, float, tuple[float, float], str]] = []
    for record in val:
        metrics = val_metrics(record)
        for name, spec in ctx.metric_specs.items():
            bounds = _spec_range(spec)
            if bounds is None or name not in metrics:
                continue
            value = metrics[name]
            if not bounds[0] <= value <= bounds[1]:
                outside.append((name, int(record["step"]), value, bounds, str(spec.get("unit") or "")))
    last_step = int(val[-1]["step"])
    # Judged on the latest evaluation: a range is what a *working* model stays within, and an early evaluation of a
    # barely trained model (a captioner still emitting empty captions) may sit outside it and then recover.
    if not any(o[1] == last_step for o in outside):
        return None
    names = sorted({o[0] for o in outside})
    first = outside[0]
    latest = [o for o in outside if o[1] == last_step]
    unit = f" {first[4]}" if first[4] else ""
    evidence = (
        f"rule: a metric outside the task's plausible range (Task.metric_specs); '{first[0]}' was {first[2]:.4g}{unit} "
        f"at step {first[1]} (plausible {first[3][0]:g}–{first[3][1]:g}{unit}); {len(outside)} value(s) outside in "
        f"{len({o[1] for o in outside})} of {len(val)} evaluation(s), metrics {', '.join(names)}"
    )
    if latest:
        evidence += "; latest: " + ", ".join(f"{o[0]} {o[2]:.4g}" for o in latest)
    return Finding(
        "val.implausible",
        "error",
        f"Validation metric '{first[0]}' is outside the range any working model stays within",
        evidence,
        "The predictions are not on the targets' scale: check that the training loss is finite and falling (a "
        "diverged run — lower optim.lr), that predictions and targets use the same units and frame in eval_step, "
        "and that the evaluator is given (prediction, target) in the order it expects.",
        first[1],
    )


def check_val_diverged(val: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``val.diverged``: the latest evaluation is ≥ ``val_away_factor`` worse than the best one and worse than the
    first one (for metrics whose direction the task declares). Reason: :attr:`Thresholds.val_away_factor`."""
    if len(val) < 2:
        return None
    first, latest = val_metrics(val[0]), val_metrics(val[-1])
    history = [val_metrics(r) for r in val]
    for name, spec in ctx.metric_specs.items():
        if name not in latest or name not in first:
            continue
        values = [m[name] for m in history if name in m]
        higher = bool(spec.get("higher_is_better"))
        best = max(values) if higher else min(values)
        now, start = latest[name], first[name]
        if higher:
            away = now > 0 and best / now >= th.val_away_factor and now < start
            away = away or (now <= 0 < best and now < start)
        else:
            away = best > 0 and now / best >= th.val_away_factor and now > start
        bounds = _spec_range(spec)
        # A metric near zero (an AP or PCK early in training) moves by large *ratios* within its noise: the move
        # must also cover a tenth of the metric's declared range to count (10 AP points, 100 mm of a hand's MPJPE).
        if bounds is not None and abs(now - best) < th.val_away_span * (bounds[1] - bounds[0]):
            continue
        if not away:
            continue
        unit = f" {spec.get('unit')}" if spec.get("unit") else ""
        return Finding(
            "val.diverged",
            "error",
            f"Validation metric '{name}' moved an order of magnitude away from its best",
            f"rule: latest ≥ {th.val_away_factor:g}× worse than the best and worse than the first evaluation; "
            f"'{name}' {start:.4g}{unit} (step {val[0]['step']}) → best {best:.4g}{unit} → {now:.4g}{unit} "
            f"(step {val[-1]['step']})",
            "Training undid what it had learned: the learning rate is probably too high for the later phase "
            "(lower optim.lr, set train.clip_grad_norm), or the data changed (a curriculum, on_epoch_start).",
            int(val[-1]["step"]),
        )
    return None
