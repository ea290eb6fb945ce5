"""The report's figures: pure functions from ``metrics.jsonl`` records to PNG files (matplotlib, Agg).

Each ``plot_*`` function draws one figure into ``out_dir`` and returns its path, or ``None`` when the
records hold nothing to draw (e.g. no evaluation yet). Every axis says its unit (optimizer steps below, epochs
above, mm, %), and every legend sits outside the axes, where it covers no data. What each figure's axes say is
also written into the PNG (text chunk ``Description``), from which the page takes the image's ``alt`` text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trainwell.doctor.checks import loss_components, val_metrics
from trainwell.report.units import metric_unit

Record = Mapping[str, Any]
MAX_METRIC_PANELS = 12
STEP_LABEL = "optimizer step"
EPOCH_LABEL = "epoch"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: Sequence[Record], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[key])) for r in records if _finite(r.get(key))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def outside_legend(ax: Any, handles: Sequence[Any] | None = None) -> None:
    """One legend for ``ax`` (and its twin's ``handles``), right of the axes: it never covers a curve."""
    own, labels = ax.get_legend_handles_labels()
    for extra in handles or []:
        own, labels = [*own, *extra.get_legend_handles_labels()[0]], [*labels, *extra.get_legend_handles_labels()[1]]
    if own:
        ax.legend(
            own,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.02 if not handles else 1.12, 1.0),
            fontsize=8,
            borderaxespad=0.0,
        )


def _steps_axis(ax: Any, steps_per_epoch: float | None) -> None:
    """Optimizer steps below; epochs on a second axis above when the run's steps per epoch are known."""
    ax.set_xlabel(STEP_LABEL)
    ax.set_xlim(left=0)  # training starts at step 0 (and one evaluation alone gets a readable axis)
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
        top.set_xlabel(EPOCH_LABEL, fontsize=8)
        top.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 1.25
        top.tick_params(labelsize=8)


def describe(fig: Figure) -> str:
    """What the figure's axes say (titles, axis labels, where the legends are), for ``alt`` text and tests."""
    fig.canvas.draw()
    parts = []
    for ax in fig.axes:
        labels = [f"{axis} {label}" for axis, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if label]
        labels += [f"x {child.get_xlabel()}" for child in ax.child_axes if child.get_xlabel()]  # the epoch axis
        if ax.get_title():
            labels.insert(0, ax.get_title())
        legend = ax.get_legend()
        if legend is not None:
            inside = legend.get_window_extent().overlaps(ax.get_window_extent())
            labels.append("legend inside the axes" if inside else "legend outside the axes")
        if labels:
            parts.append(", ".join(labels))
    return "; ".join(parts)


def save_figure(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    # bbox_inches="tight" keeps the legends placed right of the axes inside the image.
    fig.savefig(path, dpi=100, format="png", bbox_inches="tight", metadata={"Description": describe(fig)})
    plt.close(fig)
    return path


def _wants_log(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 30


def plot_losses(train: Sequence[Record], path: Path, steps_per_epoch: float | None = None) -> Path | None:
    """Total loss and every named component against the optimizer step."""
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    steps, total = _series(train, "loss")
    ax.plot(steps, total, color="black", linewidth=2, label="total")
    names: list[str] = []
    for record in train:
        names += [n for n in loss_components(record) if n not in names]
    drawn = list(total)
    for name in names:
        s, v = _series(train, f"loss/{name}")
        ax.plot(s, v, linewidth=1.2, label=name)
        drawn += v
    if _wants_log(drawn):
        ax.set_yscale("log")
    ax.set(title="Training loss (interval means)", ylabel="loss (weighted, the task's units)")
    _steps_axis(ax, steps_per_epoch)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return save_figure(fig, path)


def plot_lr(train: Sequence[Record], path: Path, steps_per_epoch: float | None = None) -> Path | None:
    """The learning rate at each logging step."""
    steps, lr = _series(train, "lr")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(steps, lr, color="tab:purple")
    ax.set(title="Learning rate", ylabel="learning rate (per step)")
    _steps_axis(ax, steps_per_epoch)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_gradients(
    train: Sequence[Record], clip: float | None, path: Path, steps_per_epoch: float | None = None
) -> Path | None:
    """Gradient norm (interval mean and max, before clipping) and the share of steps clipped."""
    steps, mean = _series(train, "grad_norm")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(steps, mean, label="grad norm (mean)", color="tab:blue")
    s_max, peak = _series(train, "grad_norm_max")
    if s_max:
        ax.plot(s_max, peak, label="grad norm (max)", color="tab:blue", alpha=0.4, linestyle="--")
    if clip is not None:
        ax.axhline(clip, color="tab:red", linewidth=1, label=f"clip at {clip:g}")
    if _wants_log(mean + peak + ([clip] if clip else [])):
        ax.set_yscale("log")
    ax.set(title="Gradient norm (before clipping)", ylabel="‖g‖ (L2, all parameters)")
    _steps_axis(ax, steps_per_epoch)
    ax.grid(alpha=0.3)
    s_clip, rate = _series(train, "clip_rate")
    twins = []
    if s_clip:
        twin = ax.twinx()
        twin.plot(s_clip, [100 * r for r in rate], color="tab:orange", label="clipped steps (%)")
        twin.set_ylim(-5, 105)
        twin.set_ylabel("clipped steps (%)")
        twins.append(twin)
    outside_legend(ax, twins)
    return save_figure(fig, path)


def plot_updates(train: Sequence[Record], path: Path, high: float, steps_per_epoch: float | None = None) -> Path | None:
    """‖Δw‖/‖w‖ of the optimizer step at each logging step (the learning rate's effect)."""
    steps, ratio = _series(train, "update_ratio")
    ratio_pairs = [(s, r) for s, r in zip(steps, ratio, strict=True) if r > 0]
    if not ratio_pairs:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot([s for s, _ in ratio_pairs], [r for _, r in ratio_pairs], color="tab:green", marker=".", label="‖Δw‖/‖w‖")
    ax.axhline(high, color="tab:red", linewidth=1, linestyle="--", label=f"too large ({high:g})")
    ax.set_yscale("log")
    ax.set(title="Update size per optimizer step", ylabel="‖Δw‖/‖w‖ (ratio, log)")
    _steps_axis(ax, steps_per_epoch)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return save_figure(fig, path)


def plot_data_wait(train: Sequence[Record], path: Path, steps_per_epoch: float | None = None) -> Path | None:
    """Share of wall time spent waiting for the next batch, and the throughput."""
    steps, share = _series(train, "data_wait_share")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(steps, [100 * v for v in share], color="tab:brown", label="waiting for data (%)")
    ax.set_ylim(-5, 105)
    ax.set(title="Input pipeline", ylabel="waiting for data (%)")
    _steps_axis(ax, steps_per_epoch)
    ax.grid(alpha=0.3)
    s_rate, rate = _series(train, "steps_per_s")
    twins = []
    if s_rate:
        twin = ax.twinx()
        twin.plot(s_rate, rate, color="tab:gray", alpha=0.6, label="steps / s")
        twin.set_ylabel("throughput (steps / s)")
        twins.append(twin)
    outside_legend(ax, twins)
    return save_figure(fig, path)


def best_evaluation(
    val: Sequence[Record], best: Callable[[Mapping[str, float]], float] | None, mode: str
) -> int | None:
    """The index of the evaluation ``eval.best_metric`` picks (as the checkpoint rule does), or ``None``."""
    if best is None:
        return None
    scores = []
    for record in val:
        try:
            scores.append(best(val_metrics(record)))
        except (KeyError, ZeroDivisionError, ValueError):
            scores.append(math.nan)
    finite = [(v, i) for i, v in enumerate(scores) if math.isfinite(v)]
    if not finite:
        return None
    return (min(finite) if mode == "min" else max(finite))[1]


def plot_validation(
    val: Sequence[Record],
    path: Path,
    best: Callable[[Mapping[str, float]], float] | None,
    mode: str,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    steps_per_epoch: float | None = None,
) -> tuple[Path | None, int | None]:
    """One panel per scalar validation metric, its unit on the y axis; the best evaluation (``eval.best_metric``)
    is marked. Returns ``(path, index of the best evaluation)``."""
    scalars = [k for k in (val_metrics(val[-1]) if val else {}) if "/" not in k][:MAX_METRIC_PANELS]
    if not scalars:
        return None, None
    best_index = best_evaluation(val, best, mode)
    cols = min(3, len(scalars))
    rows = -(-len(scalars) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, scalars, strict=False):
        unit = metric_unit(name, specs or {})
        steps, values = _series(val, name)
        ax.plot(steps, [v * unit.scale for v in values], marker="o", color="tab:blue")
        if best_index is not None and _finite(val[best_index].get(name)):
            b = val[best_index]
            ax.axvline(int(b["step"]), color="tab:green", linestyle="--", linewidth=1)
            ax.plot([int(b["step"])], [float(b[name]) * unit.scale], marker="*", markersize=14, color="tab:green")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit.axis(name), fontsize=8)
        _steps_axis(ax, steps_per_epoch)
        ax.xaxis.label.set_fontsize(8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scalars) :]:
        ax.axis("off")
    title = "Validation metrics"
    if best_index is not None:
        title += f" (★ best: epoch {val[best_index].get('epoch')}, step {val[best_index]['step']})"
    fig.suptitle(title)
    return save_figure(fig, path), best_index
