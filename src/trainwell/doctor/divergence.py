"""History checks judged against the run's own reference values: its loss at initialisation (``loss.diverged``),
the distance the planned run can move the weights (``optim.lr_too_low``), the decay it applies per step
(``optim.weight_decay_strong``) and the share of the model that can learn (``model.frozen_parameters``).

The reference values are measured by the live doctor (:mod:`trainwell.doctor.live`) and recorded in
``findings.jsonl`` (:attr:`RunContext.reference`); a run without them (an older run, the doctor off) simply does not
get the findings that need them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from trainwell.doctor.context import RunContext, Thresholds, _finite
from trainwell.doctor.findings import Finding


def _weights_evidence(ctx: RunContext) -> str:
    """How the probed weights' norm moved, and the first step's update size (empty if not recorded)."""
    ref, parts = ctx.reference, []
    if ref.get("update_ratio_first") is not None:
        parts.append(f"the first optimizer step changed the weights by {ref['update_ratio_first']:.2g} of their norm")
    init, last = ref.get("weight_norm_init"), ref.get("weight_norm_last")
    if init and last is not None:
        parts.append(f"‖w‖ went {init:.3g} → {last:.3g} (×{last / init:.3g}) by step {int(ref['weight_norm_step'])}")
    return "; ".join(parts)


def check_divergence(train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``loss.diverged``: a logged training loss an order of magnitude above the untrained model's loss.

    Judged from the first log line on, so a 3-line run is covered. Reason for the bound: see
    :attr:`Thresholds.diverged_factor`. A loss that can be ≤ 0 has no such scale and is not judged.
    """
    init, measured = ctx.reference.get("loss_init"), ctx.reference.get("loss_init_std")
    if init is None or init <= 0:
        return None
    spread = measured or 0.0
    bound = max(th.diverged_factor * init, init + th.diverged_noise * spread)
    high = [(int(r["step"]), float(r["loss"])) for r in train if float(r["loss"]) >= bound]
    last_step, last = int(train[-1]["step"]), float(train[-1]["loss"])
    # Without a spread (a first batch of one sample) the reference is a single, possibly lucky draw: judge only a
    # loss that is still that high at the latest line (a diverged run stays up).
    if not high or (measured is None and last < bound):
        return None
    step, worst = max(high, key=lambda item: item[1])
    reference = (
        f"{init:.4g} ± {spread:.2g} (first batch and its halves, before any update)"
        if measured is not None
        else f"{init:.4g} (the first batch, before any update; one sample, so no spread was measured and the loss "
        "must still be that high at the latest line)"
    )
    evidence = (
        f"rule: logged loss ≥ max({th.diverged_factor:g} × loss at initialisation, init + "
        f"{th.diverged_noise:g} std); the untrained model's loss was {reference}, the logged loss reached {worst:.4g} "
        f"at step {step} ({worst / init:.3g}× it) on {len(high)} of {len(train)} log line(s), and is {last:.4g} at "
        f"step {last_step}"
    )
    weights = _weights_evidence(ctx)
    if weights:
        evidence += f"; {weights}"
    return Finding(
        "loss.diverged",
        "error",
        "Training diverged: the loss rose an order of magnitude above the untrained model's — the learning rate "
        "is too high",
        evidence,
        f"Lower optim.lr (now {ctx.lr}) by 10–100× and/or lengthen schedule.warmup_steps (now {ctx.warmup_steps}). "
        "If the learning rate is the tuned one, look for a loss weight or target scale far off (the first-batch "
        "report), or an exploding component (loss/<name> in metrics.jsonl).",
        step,
    )


def check_lr_too_low(train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``optim.lr_too_low``: the whole planned run cannot move the weights by 1 % of their norm.

    ``update_ratio`` is the largest ‖Δw‖/‖w‖ of an interval (an upper estimate of its steps); its median × the
    planned optimizer steps bounds the run's total relative movement. Reason: :attr:`Thresholds.cumulative_update_min`.
    """
    # Judged on the steps after the warmup: a warmup from zero makes the first updates tiny on purpose.
    after = [r for r in train if int(r["step"]) > ctx.warmup_steps]
    ratios = [float(r["update_ratio"]) for r in after if _finite(r.get("update_ratio"))]
    if not ratios:
        return None
    steps = ctx.total_steps or int(train[-1]["step"])
    ratio = statistics.median(ratios)
    reach = ratio * steps
    if reach >= th.cumulative_update_min:
        return None
    norms = [float(r["grad_norm"]) for r in train if _finite(r.get("grad_norm"))]
    grad = statistics.median(norms) if norms else None
    evidence = (
        f"rule: median ‖Δw‖/‖w‖ per step × planned steps < {th.cumulative_update_min:g}; the median update was "
        f"{ratio:.2g} of the weights' norm over {len(ratios)} log line(s), so the {steps} planned steps can move "
        f"the weights by at most {reach:.2g} of their norm (healthy runs: 0.1 and more)"
    )
    if grad is not None:
        evidence += f"; median gradient norm {grad:.3g}"
    loss = [float(r["loss"]) for r in train]
    evidence += f"; loss {loss[0]:.4g} → {loss[-1]:.4g}"
    if grad == 0.0:
        fix = (
            "The gradients are zero: the loss does not depend on the trainable parameters (dead activations, a "
            "constant output, a mask that removes every element). Check compute_losses on one batch."
        )
        title = "The weights do not move: the gradients are zero"
    else:
        fix = (
            f"Raise optim.lr (now {ctx.lr}) — by 10–1000×, to where ‖Δw‖/‖w‖ is about 1e-3–1e-2 per step — and "
            f"check schedule.warmup_steps ({ctx.warmup_steps}) and schedule.min_lr_ratio."
        )
        title = "The learning rate is too low: the run cannot move the weights"
    return Finding("optim.lr_too_low", "warning", title, evidence, fix, int(train[-1]["step"]))


def check_weight_decay(train: Sequence[Mapping[str, Any]], ctx: RunContext, th: Thresholds) -> Finding | None:
    """``optim.weight_decay_strong``: decoupled decay removes ≥ 1 % of every weight per step at the peak LR.

    A configuration rule (it needs no history), shown with the weight norm's course when it was recorded.
    Reason: :attr:`Thresholds.decay_per_step_max`.
    """
    if not ctx.lr or not ctx.weight_decay:
        return None
    per_step = ctx.lr * ctx.weight_decay
    if per_step < th.decay_per_step_max:
        return None
    half_life = 0.693 / per_step
    evidence = (
        f"rule: peak lr × weight_decay ≥ {th.decay_per_step_max:g}; optim.lr {ctx.lr:g} × optim.weight_decay "
        f"{ctx.weight_decay:g} = {per_step:.3g}: each step removes {per_step:.1%} of every weight, so the decay "
        f"alone halves the weights every {half_life:.0f} steps (usual settings: below 0.1 % per step)"
    )
    weights = _weights_evidence(ctx)
    if weights:
        evidence += f"; {weights}"
    return Finding(
        "optim.weight_decay_strong",
        "warning",
        "Weight decay is so strong that it erases the weights within a few dozen steps",
        evidence,
        "Set optim.weight_decay to the usual 1e-4–1e-1 (AdamW decays by lr × weight_decay per step). A value of "
        "1–10 is often a coupled-L2 coefficient or a typo (1e-1 read as 10).",
        None,
    )


def check_frozen(ctx: RunContext, th: Thresholds) -> Finding | None:
    """``model.frozen_parameters``: most of the model's parameters have requires_grad=False."""
    share = ctx.reference.get("frozen_share")
    if share is None or share < th.frozen_share:
        return None
    return Finding(
        "model.frozen_parameters",
        "warning",
        "Most of the model's parameters are frozen (requires_grad=False)",
        f"rule: share of parameter elements with requires_grad=False ≥ {th.frozen_share:.0%}; {share:.1%} of the "
        "model's parameter elements cannot learn",
        "Check where requires_grad is switched off (a freeze loop over model.parameters() instead of one "
        "submodule, a loaded backbone left frozen). A frozen backbone on purpose: add 'model.frozen_parameters' "
        "to diagnostics.ignore.",
        None,
    )


DEGENERATE_OUTPUTS = (
    "captioning.empty_generations",
    "captioning.constant_generations",
    "detection3d.head_only_background",
)
"""Evaluators' findings about degenerate predictions (empty or constant captions, a head that predicts only
background): what any failed training produces, so a training cause explains them."""

INPUT_ERRORS = (
    "captioning.padding_in_loss",
    "captioning.labels_not_shifted",
    "hand_pose.depth_not_mm",
    "hand_pose.rgb_range",
)
"""Tasks' first-batch errors about what the model is fed or taught (padding counted in the loss, labels not
shifted, depth in metres, RGB in 0…255): a run trained on such batches cannot learn, so they explain the
training's symptoms below."""
TRAINING_SYMPTOMS = ("loss.not_decreasing", "val.stuck", "val.implausible", "val.diverged", *DEGENERATE_OUTPUTS)

CAUSES: dict[str, tuple[str, ...]] = {
    **{error: TRAINING_SYMPTOMS for error in INPUT_ERRORS},  # first: val.stuck is itself a cause below
    "loss.diverged": (
        "val.implausible",
        "val.diverged",
        "optim.large_updates",
        "grad.norm_spikes",
        "loss.not_decreasing",
        "loss.component_dominates",
        "optim.weight_decay_strong",
        "train.nonfinite",  # a loss that diverged first and overflowed later: the overflow is not the cause
        *DEGENERATE_OUTPUTS,
    ),
    # A learning rate far too high also makes lr × weight_decay large: the decay is then not the mistake.
    "optim.large_updates": (
        "val.implausible",
        "val.diverged",
        "grad.norm_spikes",
        "optim.weight_decay_strong",
        *DEGENERATE_OUTPUTS,
    ),
    "optim.lr_too_low": ("loss.not_decreasing", "val.implausible", *DEGENERATE_OUTPUTS),
    "optim.weight_decay_strong": ("loss.not_decreasing", "optim.lr_too_low", "val.implausible", *DEGENERATE_OUTPUTS),
    "model.frozen_parameters": ("loss.not_decreasing", *DEGENERATE_OUTPUTS),
    "val.stuck": ("val.diverged",),
}
"""Root cause → the symptoms it explains. When both fire, the symptom's evidence is folded into the cause
(one finding per mistake, with every number still shown): a diverged loss also makes the validation metrics
implausible, and a learning rate that cannot move the weights is why the loss does not fall."""


def consolidate(findings: Sequence[Finding]) -> tuple[list[Finding], dict[str, str]]:
    """``(findings, merged)``: symptoms explained by a present cause folded into it; ``merged`` maps symptom → cause."""
    by_id = {f.id: f for f in findings}
    merged: dict[str, str] = {}
    for cause, symptoms in CAUSES.items():
        if cause not in by_id or cause in merged:
            continue
        for symptom in symptoms:
            if symptom in by_id and symptom not in merged and symptom != cause:
                merged[symptom] = cause
    out = []
    for finding in findings:
        if finding.id in merged:
            continue
        folded = [by_id[s] for s, c in merged.items() if c == finding.id]
        if folded:
            also = "; ".join(f"[{s.id}] {s.title}: {s.evidence}" for s in folded)
            finding = Finding(
                finding.id, finding.severity, finding.title, f"{finding.evidence}. Also: {also}", finding.fix,
                finding.step,
            )  # fmt: skip
        out.append(finding)
    return out, merged
