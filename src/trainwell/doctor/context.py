"""What the history checks read: the run's context, the thresholds (each with its reason), and the helpers that
spell the ``metrics.jsonl`` record keys. Shared by :mod:`.checks`, :mod:`.divergence` and :mod:`.validation`."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainwell.engine.losses import split_loss_values

if TYPE_CHECKING:
    from trainwell.config.schema import ExperimentConfig


@dataclass(frozen=True)
class Thresholds:
    """Where the doctor draws its lines. Each bound says why it sits where it does; the newer rules (divergence,
    plausibility, tiny updates, strong decay) are relative to the run's own reference values — its loss at
    initialisation, its first evaluation, its best value, the task's declared ranges — not fitted to examples."""

    first_batches: int = 3
    """Batches of the first epoch whose tensors are summarised and checked."""
    loss_window_fraction: float = 0.3
    """``loss.not_decreasing`` looks at the first this fraction of the planned steps (after warmup)."""
    loss_window_min_records: int = 6
    """… and at least this many log lines (the check waits for them)."""
    loss_min_decrease: float = 0.10
    """Relative decrease of the total loss over that window (from a line fitted to it) below which it flags — when
    even the fitted decrease plus one standard error of the fit stays below it (the log lines carry batch noise)."""
    dominance_ratio: float = 100.0
    """``loss.component_dominates``: largest / second-largest component over the first log lines."""
    dominance_records: int = 3
    """Log lines (from the first) whose median ratio is compared with ``dominance_ratio``."""
    val_identical_rtol: float = 1e-7
    """Validation metrics this close (relative) count as identical."""
    val_train_moved: float = 0.02
    """… flagged when the mean training loss moved by more than this (relative) between the evaluations."""
    data_wait_share: float = 0.5
    """``data.input_bound``: median share of wall time spent waiting for the next batch at or above this … Half,
    because that is where the run is *bound* by its input: waiting as long as computing, so a faster pipeline at
    least doubles the speed; below it, even infinitely fast loading gains less than 2×. (It was 0.3, which a
    healthy in-memory dataset reached on a contended CPU, where indexing and collating a batch take as long as a
    tiny model's step.)"""
    data_wait_min_s: float = 0.005
    """… and median seconds waited per step, both at least this (ignores microsecond toy steps)."""
    data_wait_min_records: int = 3
    """Log lines needed (the first one, which includes start-up, is left out)."""
    spike_factor: float = 10.0
    """``grad.norm_spikes``: an interval's largest grad norm ≥ this × the median of the earlier intervals' norms."""
    spike_min_history: int = 5
    """Earlier log lines needed before spikes are counted."""
    spike_min_count: int = 2
    """Spikes needed to flag (one isolated spike is not a pattern)."""
    update_ratio_high: float = 0.1
    """``optim.large_updates``: ‖Δw‖ / ‖w‖ of one optimizer step (measured at logging steps) at or above this …"""
    update_ratio_high_records: int = 2
    """… on at least this many log lines, or once at ``update_ratio_extreme`` or above."""
    update_ratio_extreme: float = 0.3
    """One step moving the weights by this fraction of their norm is enough on its own."""
    update_ratio_low: float = 1e-4
    """Below this, ``loss.not_decreasing`` blames the learning rate."""
    sgd_clip_rate: float = 0.9
    """``grad.always_clipped`` (SGD only): share of steps clipped …"""
    sgd_clip_factor: float = 10.0
    """… with a median grad norm this many times the clip threshold."""
    diverged_factor: float = 10.0
    """``loss.diverged``: a logged training loss at least this many times the loss of the untrained model (the
    first batches, measured before the first update) — and above it by ``diverged_noise`` of its spread. A sane
    optimizer takes the loss *below* its value at initialisation within a few steps; an order of magnitude above
    it means the updates overshoot. Ten, not two, because Adam's first steps and warmup transients can lift a loss
    by a small factor, and because the first log line averages the early steps."""
    diverged_noise: float = 10.0
    """… and by at least this many standard deviations of the untrained model's loss (measured on the halves of
    the first batch: a loss that is noisy at initialisation — tiny batches, heavy-tailed targets — needs a larger
    rise before it counts)."""
    val_away_factor: float = 10.0
    """``val.diverged``: a metric's latest value an order of magnitude worse than its best (ratio for errors,
    inverse ratio for scores), and worse than at the first evaluation (training undid more than it gained)."""
    val_away_span: float = 0.1
    """… and by at least this fraction of the metric's declared plausible range (a best AP of 5 falling to 0.3 is
    a 17× ratio but within an early detector's noise; 10 AP points is not)."""
    cumulative_update_min: float = 0.01
    """``optim.lr_too_low``: the planned steps × the median measured ‖Δw‖/‖w‖ — an upper estimate of how far the
    whole run can move the weights, relative to their norm — below this. Healthy runs move the weights by tens of
    percent of their norm (the sum of per-step ratios is ≥ 0.1 in every example run); a run that can move them by
    less than 1 % ends next to its initialisation, whatever the loss does."""
    decay_per_step_max: float = 0.01
    """``optim.weight_decay_strong``: peak LR × weight decay — the fraction of every weight that decoupled decay
    removes per step — at or above this. At 0.01 the decay alone halves every weight in ~70 steps, so the model
    keeps nothing it learned for longer than that; usual settings (wd 1e-4–0.1, lr ≤ 1e-2) stay below 1e-3."""
    frozen_share: float = 0.5
    """``model.frozen_parameters``: the share of the model's parameter elements with requires_grad=False at or
    above this (more than half the model cannot learn). Frozen backbones on purpose: ignore the id."""


@dataclass(frozen=True)
class RunContext:
    """What the history checks need to know about the run besides its records."""

    total_steps: int | None = None
    log_every: int = 50
    warmup_steps: int = 0
    """Steps over which the learning rate rises: ``schedule.warmup_steps``, or OneCycle's ``pct_start`` share."""
    clip_grad_norm: float | None = None
    optimizer: str = "adamw"
    lr: float | None = None
    num_workers: int = 0
    pin_memory: bool = True
    device: str = "cpu"
    amp: str = "off"
    world_size: int = 1
    weight_decay: float = 0.0
    metric_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``{metric: {"unit", "higher_is_better", "plausible": [lo, hi] | None[, "description"]}}`` from
    ``Task.metric_specs()``,
    recorded by the live doctor so that ``trainwell doctor RUN_DIR`` judges the metrics the same way."""
    reference: dict[str, float] = field(default_factory=dict)
    """The run's own reference values, measured by the live doctor and written to ``findings.jsonl``
    (``kind: reference``): ``loss_init`` / ``loss_init_std`` (the untrained model's loss on the first batch and
    the spread over its halves), ``update_ratio_first`` and ``weight_norm_init`` (step 1), ``frozen_share``,
    ``weight_norm_last`` / ``weight_norm_step`` (‖w‖ at the latest logging step)."""

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, *, total_steps: int, log_every: int, device: str, world_size: int
    ) -> RunContext:
        """Build from the typed config and what the loop resolved (step counts, device, processes)."""
        return cls(
            total_steps=total_steps,
            log_every=log_every,
            warmup_steps=_rising_lr_steps(cfg, total_steps),
            clip_grad_norm=cfg.train.clip_grad_norm,
            optimizer=cfg.optim.name,
            lr=cfg.optim.lr,
            num_workers=cfg.data.num_workers,
            pin_memory=cfg.data.pin_memory,
            device=device,
            amp=cfg.train.amp,
            world_size=world_size,
            weight_decay=cfg.optim.weight_decay,
        )


def _rising_lr_steps(cfg: ExperimentConfig, total_steps: int) -> int:
    """The steps over which the learning rate still rises: the warmup, or OneCycle's first ``pct_start`` of the run
    (its own warmup, from ``lr / div_factor``). The early-training checks judge the run after these."""
    if cfg.schedule.decay == "onecycle":
        return max(cfg.schedule.warmup_steps, int(cfg.schedule.pct_start * total_steps))
    return cfg.schedule.warmup_steps


# -- the metrics history ---------------------------------------------------------------------------
class RunningMedian:
    """The median of every value added so far, in O(log n) per value (two heaps), equal to ``statistics.median``:
    a check that asks for the median of the earlier log lines at every line stays linear in the run's length."""

    def __init__(self) -> None:
        self._low: list[float] = []  # the smaller half, negated (a max-heap); it holds the extra value when odd
        self._high: list[float] = []  # the larger half (a min-heap)

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def add(self, value: float) -> None:
        if self._low and value > -self._low[0]:
            heapq.heappush(self._high, value)
        else:
            heapq.heappush(self._low, -value)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    def median(self) -> float:
        """As ``statistics.median``: the middle value, or the mean of the two middle ones."""
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2


def _finite(value: Any) -> bool:
    if type(value) is float:  # the common case (a JSON number), first: the history checks call this per record
        return math.isfinite(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def split_records(records: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(train, val)`` records, each sorted by step; a train record without a finite loss is left out."""
    train = [r for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    val = [r for r in records if r.get("kind") == "val"]
    return sorted(train, key=lambda r: r["step"]), sorted(val, key=lambda r: r["step"])


def loss_components(record: Mapping[str, Any]) -> dict[str, float]:
    """``{name: value}`` of the ``loss/<name>`` entries of a train record."""
    components, _ = split_loss_values(record)
    return {name: float(value) for name, value in components.items() if _finite(value)}


def val_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a val record (bookkeeping keys left out)."""
    skip = {"kind", "epoch", "step", "num_samples"}
    return {k: float(v) for k, v in record.items() if k not in skip and _finite(v)}


def metric_specs_of(task: Any) -> dict[str, dict[str, Any]]:
    """``Task.metric_specs()`` as plain data for the run context (``{}`` if the task has none or it fails)."""
    try:
        specs = task.metric_specs() if hasattr(task, "metric_specs") else {}
    except Exception:  # a broken declaration must not end the run; it only loses these checks
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        plausible = getattr(spec, "plausible", None)
        out[str(name)] = {
            "unit": str(getattr(spec, "unit", "") or ""),
            "higher_is_better": bool(getattr(spec, "higher_is_better", False)),
            "plausible": [float(plausible[0]), float(plausible[1])] if plausible is not None else None,
        }
        description = str(getattr(spec, "description", "") or "")
        if description:
            out[str(name)]["description"] = description
    return out
