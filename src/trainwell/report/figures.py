"""Every figure and per-item table of the report, in the page's order (``plot_all``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainwell.doctor.checks import split_records
from trainwell.report.items import ItemTable, item_figures
from trainwell.report.plots import (
    Record,
    plot_data_wait,
    plot_gradients,
    plot_losses,
    plot_lr,
    plot_updates,
    plot_validation,
)

__all__ = ["plot_all"]


def plot_all(
    records: Sequence[Record],
    out_dir: Path,
    *,
    clip: float | None,
    best: Callable[[Mapping[str, float]], float] | None,
    best_mode: str,
    update_ratio_high: float,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    steps_per_epoch: float | None = None,
) -> list[tuple[str, Path | ItemTable]]:
    """Every figure (PNG path) and table the records allow, as ``(caption, figure or table)`` in report order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = split_records(records)
    per_epoch = steps_per_epoch
    shown: list[tuple[str, Path | ItemTable | None]] = [
        ("Loss components", plot_losses(train, out_dir / "losses.png", per_epoch)),
        ("Learning rate", plot_lr(train, out_dir / "lr.png", per_epoch)),
        ("Gradient norm and clipping", plot_gradients(train, clip, out_dir / "gradients.png", per_epoch)),
    ]
    val_path, _ = plot_validation(val, out_dir / "validation.png", best, best_mode, specs or {}, per_epoch)
    shown.append(("Validation metrics", val_path))
    shown += item_figures(val, out_dir, specs or {})
    shown += [
        ("Update size", plot_updates(train, out_dir / "updates.png", update_ratio_high, per_epoch)),
        ("Input pipeline", plot_data_wait(train, out_dir / "data_wait.png", per_epoch)),
    ]
    return [(caption, item) for caption, item in shown if item is not None]
