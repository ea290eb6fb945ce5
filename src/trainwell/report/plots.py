"""The report's figures: pure functions from ``metrics.jsonl`` records to PNG files (matplotlib, Agg).

Each ``plot_*`` function draws one figure into ``out_dir`` and returns its path, or ``None`` when the
records hold nothing to draw (e.g. no evaluation yet).
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

from trainwell.doctor.checks import loss_components, split_records, val_metrics

Record = Mapping[str, Any]
MAX_METRIC_PANELS = 9


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: Sequence[Record], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[key])) for r in records if _finite(r.get(key))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def _wants_log(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 30


def plot_losses(train: Sequence[Record], path: Path) -> Path | None:
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
    ax.set(title="Training loss (interval means)", xlabel="optimizer step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_lr(train: Sequence[Record], path: Path) -> Path | None:
    """The learning rate at each logging step."""
    steps, lr = _series(train, "lr")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(steps, lr, color="tab:purple")
    ax.set(title="Learning rate", xlabel="optimizer step", ylabel="lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_gradients(train: Sequence[Record], clip: float | None, path: Path) -> Path | None:
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
    ax.set(title="Gradient norm", xlabel="optimizer step", ylabel="‖g‖")
    ax.grid(alpha=0.3)
    s_clip, rate = _series(train, "clip_rate")
    if s_clip:
        twin = ax.twinx()
        twin.plot(s_clip, [100 * r for r in rate], color="tab:orange", label="clipped steps (%)")
        twin.set_ylim(-5, 105)
        twin.set_ylabel("clipped steps (%)")
        twin.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_updates(train: Sequence[Record], path: Path, high: float) -> Path | None:
    """‖Δw‖/‖w‖ of the optimizer step at each logging step (the learning rate's effect)."""
    steps, ratio = _series(train, "update_ratio")
    ratio_pairs = [(s, r) for s, r in zip(steps, ratio, strict=True) if r > 0]
    if not ratio_pairs:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot([s for s, _ in ratio_pairs], [r for _, r in ratio_pairs], color="tab:green", marker=".")
    ax.axhline(high, color="tab:red", linewidth=1, linestyle="--", label=f"too large ({high:g})")
    ax.set_yscale("log")
    ax.set(title="Update size ‖Δw‖/‖w‖ per optimizer step", xlabel="optimizer step", ylabel="ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_data_wait(train: Sequence[Record], path: Path) -> Path | None:
    """Share of wall time spent waiting for the next batch, and the throughput."""
    steps, share = _series(train, "data_wait_share")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(steps, [100 * v for v in share], color="tab:brown", label="waiting for data (%)")
    ax.set_ylim(-5, 105)
    ax.set(title="Input pipeline", xlabel="optimizer step", ylabel="waiting for data (%)")
    ax.grid(alpha=0.3)
    s_rate, rate = _series(train, "steps_per_s")
    if s_rate:
        twin = ax.twinx()
        twin.plot(s_rate, rate, color="tab:gray", alpha=0.6, label="steps / s")
        twin.set_ylabel("steps / s")
        twin.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_validation(
    val: Sequence[Record], path: Path, best: Callable[[Mapping[str, float]], float] | None, mode: str
) -> tuple[Path | None, int | None]:
    """One panel per scalar validation metric; the best evaluation (``eval.best_metric``) is marked.

    Returns ``(path, index of the best evaluation)``.
    """
    scalars = [k for k in (val_metrics(val[-1]) if val else {}) if "/" not in k][:MAX_METRIC_PANELS]
    if not scalars:
        return None, None
    best_index = None
    if best is not None:
        scores = []
        for record in val:
            try:
                scores.append(best(val_metrics(record)))
            except (KeyError, ZeroDivisionError, ValueError):
                scores.append(math.nan)
        finite = [(v, i) for i, v in enumerate(scores) if math.isfinite(v)]
        if finite:
            best_index = (min(finite) if mode == "min" else max(finite))[1]
    cols = min(3, len(scalars))
    rows = -(-len(scalars) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, scalars, strict=False):
        steps, values = _series(val, name)
        ax.plot(steps, values, marker="o", color="tab:blue")
        if best_index is not None and _finite(val[best_index].get(name)):
            b = val[best_index]
            ax.axvline(int(b["step"]), color="tab:green", linestyle="--", linewidth=1)
            ax.plot([int(b["step"])], [float(b[name])], marker="*", markersize=14, color="tab:green")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scalars) :]:
        ax.axis("off")
    title = "Validation metrics"
    if best_index is not None:
        title += f" (★ best: epoch {val[best_index].get('epoch')}, step {val[best_index]['step']})"
    fig.suptitle(title)
    return _save(fig, path), best_index


def plot_metric_groups(val: Sequence[Record], out_dir: Path, units: Mapping[str, str] | None = None) -> list[Path]:
    """Bar charts of metrics named ``group/item`` (e.g. per-joint errors ``mpjpe/thumb_tip``), last evaluation."""
    if not val:
        return []
    groups: dict[str, dict[str, float]] = {}
    for key, value in val_metrics(val[-1]).items():
        if "/" in key:
            group, item = key.split("/", 1)
            groups.setdefault(group, {})[item] = value
    paths = []
    for group, items in groups.items():
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(items) + 2), 3.4))
        ax.bar(range(len(items)), list(items.values()), color="tab:blue")
        ax.set_xticks(range(len(items)), list(items), rotation=60, ha="right", fontsize=8)
        unit = (units or {}).get(group, "")
        ax.set(title=f"{group} per item (step {val[-1]['step']})", ylabel=f"{group} {unit}".strip())
        ax.grid(alpha=0.3, axis="y")
        safe = "".join(c if c.isalnum() else "_" for c in group)
        paths.append(_save(fig, out_dir / f"group_{safe}.png"))
    return paths


def plot_all(
    records: Sequence[Record],
    out_dir: Path,
    *,
    clip: float | None,
    best: Callable[[Mapping[str, float]], float] | None,
    best_mode: str,
    update_ratio_high: float,
    units: Mapping[str, str] | None = None,
) -> list[tuple[str, Path]]:
    """Every figure the records allow, as ``(caption, path)`` in report order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = split_records(records)
    figures: list[tuple[str, Path | None]] = [
        ("Loss components", plot_losses(train, out_dir / "losses.png")),
        ("Learning rate", plot_lr(train, out_dir / "lr.png")),
        ("Gradient norm and clipping", plot_gradients(train, clip, out_dir / "gradients.png")),
    ]
    val_path, _ = plot_validation(val, out_dir / "validation.png", best, best_mode)
    figures.append(("Validation metrics", val_path))
    figures += [(f"Per item: {p.stem[6:]}", p) for p in plot_metric_groups(val, out_dir, units)]
    figures += [
        ("Update size", plot_updates(train, out_dir / "updates.png", update_ratio_high)),
        ("Input pipeline", plot_data_wait(train, out_dir / "data_wait.png")),
    ]
    return [(caption, path) for caption, path in figures if path is not None]
