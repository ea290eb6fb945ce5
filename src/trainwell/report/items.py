"""Per-item results of the last evaluation: metrics named ``group/item`` (per-joint errors ``mpjpe_joint/thumb_tip``,
a server's protocol ``freihand/pa_mpjpe_mm``, KITTI's ``Car_3d/moderate_R40``), as horizontal bar charts or tables.

A group whose items are in different units (FreiHAND's errors in mm beside its AUC, a fraction) gets one chart per
unit. Metrics that name a difficulty (``easy``, ``moderate``, ``hard``, as KITTI's do) are pivoted instead: one row
per class and protocol, one column per difficulty — a grouped horizontal bar chart when the rows fit on a page,
a table when there are more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from trainwell.doctor.checks import val_metrics
from trainwell.report.plots import Record, outside_legend, save_figure
from trainwell.report.units import Unit, metric_unit

__all__ = ["ItemTable", "Pivot", "item_figures", "pivot_by_difficulty"]

DIFFICULTIES = ("easy", "moderate", "hard")
MAX_CHART_ROWS = 24
"""A pivot with more rows than this is shown as a table (a chart that tall is not read)."""
_COLOURS = {"easy": "tab:green", "moderate": "tab:orange", "hard": "tab:red"}


@dataclass
class Pivot:
    """Metrics of one family arranged as ``rows[row][difficulty] = value`` (in the metrics' own scale)."""

    name: str
    unit: Unit
    rows: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ItemTable:
    """A table for the page: ``caption``, column ``header`` and rows of already formatted cells."""

    caption: str
    header: list[str]
    rows: list[list[str]]


def _difficulty_split(name: str) -> tuple[str, str, str] | None:
    """``(family, row, difficulty)`` for a metric whose name holds one difficulty token, else ``None``.

    ``kitti/Car_bbox_easy_R11_70`` → ``("kitti", "Car bbox R11 70", "easy")``; a group of one protocol per class,
    ``Car_3d/easy_R40`` → ``("R40", "Car 3d", "easy")`` (such groups are merged into one family).
    """
    if "/" not in name:
        return None
    group, item = name.split("/", 1)
    tokens = item.split("_")
    found = [t for t in tokens if t in DIFFICULTIES]
    if len(found) != 1:
        return None
    rest = " ".join(t for t in tokens if t not in DIFFICULTIES)
    if len(rest.split()) <= 1:  # the item is only a difficulty and a protocol: the group names the row
        return rest or "per class", group.replace("_", " "), found[0]
    return group, rest, found[0]


def pivot_by_difficulty(metrics: Mapping[str, float], specs: Mapping[str, Mapping[str, Any]]) -> list[Pivot]:
    """Every difficulty-named metric, pivoted by family (see :func:`_difficulty_split`), in first-seen order."""
    pivots: dict[str, Pivot] = {}
    for name, value in metrics.items():
        split = _difficulty_split(name)
        if split is None:
            continue
        family, row, difficulty = split
        pivot = pivots.setdefault(family, Pivot(family, metric_unit(name, specs)))
        pivot.rows.setdefault(row, {})[difficulty] = value
    return list(pivots.values())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def plot_pivot(pivot: Pivot, step: int, path: Path) -> Path:
    """A grouped horizontal bar chart: one row per class/protocol, one bar per difficulty."""
    rows = list(pivot.rows)
    columns = [d for d in DIFFICULTIES if any(d in r for r in pivot.rows.values())]
    height = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(rows) * max(1, len(columns)) + 1.4))
    for k, difficulty in enumerate(columns):
        positions = [i + (k - (len(columns) - 1) / 2) * height for i in range(len(rows))]
        values = [pivot.rows[r].get(difficulty, float("nan")) * pivot.unit.scale for r in rows]
        bars = ax.barh(positions, values, height=height, color=_COLOURS[difficulty], label=difficulty)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=6, padding=2)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()  # first row on top, as in a table
    ax.set(title=f"{pivot.name}: per class and difficulty (step {step})", xlabel=pivot.unit.axis("value"))
    if pivot.unit.label == "%":
        ax.set_xlim(0, 100)
    ax.grid(alpha=0.3, axis="x")
    outside_legend(ax)
    return save_figure(fig, path)


def pivot_table(pivot: Pivot, step: int) -> ItemTable:
    """The pivot as a table, values with their unit."""
    columns = [d for d in DIFFICULTIES if any(d in r for r in pivot.rows.values())]
    rows = [[row, *(pivot.unit.show(v[d]) if d in v else "–" for d in columns)] for row, v in pivot.rows.items()]
    return ItemTable(f"{pivot.name}: per class and difficulty (step {step})", ["", *columns], rows)


def plot_items(group: str, items: Mapping[str, float], unit: Unit, step: int, path: Path) -> Path:
    """One horizontal bar per item of a group, all in one unit, the value written at the bar's end."""
    names, values = list(items), [v * unit.scale for v in items.values()]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.4))
    bars = ax.barh(range(len(names)), values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7, padding=2)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(title=f"{group} per item (step {step})", xlabel=unit.axis(group))
    ax.margins(x=0.12)  # room for the value labels
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def group_description(group: str, items: Mapping[str, float], specs: Mapping[str, Mapping[str, Any]]) -> str:
    """The task's one-line description of a group's protocol: from the spec of one of its metrics (``group/item``)
    or of the group itself; ``""`` when the task gave none."""
    for name in (*(f"{group}/{item}" for item in items), group):
        description = specs.get(name, {}).get("description")
        if description:
            return str(description)
    return ""


def item_figures(
    val: Sequence[Record], out_dir: Path, specs: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, Path | ItemTable]]:
    """The last evaluation's per-item results, as ``(caption, PNG path or table)`` in report order."""
    if not val:
        return []
    step = int(val[-1]["step"])
    metrics = {k: v for k, v in val_metrics(val[-1]).items() if "/" in k}
    shown: list[tuple[str, Path | ItemTable]] = []
    pivots = pivot_by_difficulty(metrics, specs)
    for pivot in pivots:
        caption = f"Per class and difficulty: {pivot.name}"
        if len(pivot.rows) <= MAX_CHART_ROWS:
            shown.append((caption, plot_pivot(pivot, step, out_dir / f"pivot_{_safe(pivot.name)}.png")))
        else:
            shown.append((caption, pivot_table(pivot, step)))
    pivoted = {name for name in metrics if _difficulty_split(name) is not None}
    groups: dict[tuple[str, Unit], dict[str, float]] = {}
    for name, value in metrics.items():
        if name not in pivoted:
            group, item = name.split("/", 1)
            groups.setdefault((group, metric_unit(name, specs)), {})[item] = value
    split = {group for group, _ in groups if sum(1 for g, _ in groups if g == group) > 1}
    for (group, unit), items in groups.items():
        suffix = f"_{_safe(unit.label.replace('%', 'pct')) or 'plain'}" if group in split else ""
        caption = f"Per item: {group}" + (f" ({unit.label or 'no unit'})" if group in split else "")
        caption += f" — {described}" if (described := group_description(group, items, specs)) else ""
        shown.append((caption, plot_items(group, items, unit, step, out_dir / f"group_{_safe(group)}{suffix}.png")))
    return shown
