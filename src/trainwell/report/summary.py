"""The report's summary at the top of the page: how the run ended (``status.json``), what the doctor says
(``findings.jsonl`` and the history checks), and the headline metrics — best and last value, each with its step.

Pure functions from the run's records to rows of text; :func:`summary_html` lays them out as two tables
(``id="run-summary"``, ``id="headline-metrics"``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainwell.doctor.checks import split_records, val_metrics
from trainwell.records.findings import Finding
from trainwell.report.units import Unit, metric_unit

__all__ = ["Headline", "headline_metrics", "run_rows", "summary_html"]

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Headline:
    """One metric's row: its best value (in the direction that is better) and its last, each with its step."""

    name: str
    unit: Unit
    higher_is_better: bool
    best: float
    best_step: int
    best_epoch: Any
    last: float
    last_step: int

    def cells(self) -> list[str]:
        better = "higher" if self.higher_is_better else "lower"
        return [
            self.name,
            f"{better} is better",
            self.unit.show(self.best),
            f"step {self.best_step}" + (f" (epoch {self.best_epoch})" if self.best_epoch is not None else ""),
            self.unit.show(self.last),
            f"step {self.last_step}",
        ]


def _headline(name: str, points: Sequence[tuple[Record, float]], unit: Unit, higher: bool) -> Headline | None:
    finite = [(r, v) for r, v in points if math.isfinite(v)]
    if not finite:
        return None
    pick = max if higher else min
    best_record, best = pick(finite, key=lambda p: p[1])  # the first of equal values, as the checkpoint rule keeps
    last_record, last = finite[-1]
    return Headline(
        name, unit, higher, best, int(best_record["step"]), best_record.get("epoch"), last, int(last_record["step"])
    )


def headline_metrics(
    records: Sequence[Record],
    specs: Mapping[str, Mapping[str, Any]],
    best_metric: tuple[str, Callable[[Mapping[str, float]], float], str] | None = None,
) -> list[Headline]:
    """The rows: ``eval.best_metric`` (``(text, expression, mode)``) first, then every scalar validation metric of
    the last evaluation, then the training loss (lower is better)."""
    train, val = split_records(records)
    rows: list[Headline | None] = []
    if best_metric is not None and val:
        text, expression, mode = best_metric
        points = []
        for record in val:
            try:
                points.append((record, float(expression(val_metrics(record)))))
            except (KeyError, ZeroDivisionError, ValueError):
                continue
        units = {metric_unit(n, specs) for n in getattr(expression, "names", ())}
        unit = units.pop() if len(units) == 1 else Unit()  # (mpjpe + pa_mpjpe) / 2 is in mm; a mix has no unit
        rows.append(_headline(f"best_metric: {text}", points, unit, mode == "max"))
    for name in [k for k in (val_metrics(val[-1]) if val else {}) if "/" not in k]:
        points = [(r, float(r[name])) for r in val if isinstance(r.get(name), int | float)]
        higher = bool(specs.get(name, {}).get("higher_is_better", False))
        rows.append(_headline(name, points, metric_unit(name, specs), higher))
    rows.append(_headline("train loss", [(r, float(r["loss"])) for r in train], Unit(), False))
    return [row for row in rows if row is not None]


def run_rows(status: Mapping[str, Any], described: str, findings: Sequence[Finding]) -> list[tuple[str, str]]:
    """``(label, text)`` rows: the status (state, step, when, why) and the doctor's findings by severity."""
    state = str(status.get("state") or "unknown (no status.json)")
    rows = [("Status", state), ("Status in words", described)]
    if "step" in status:
        rows.append(("Last step", str(status["step"])))
    if status.get("updated"):
        rows.append(("Status written", str(status["updated"])))
    for key in ("reason", "error"):
        if status.get(key):
            rows.append((key.capitalize(), str(status[key])))
    counts = {severity: [f for f in findings if f.severity == severity] for severity in ("error", "warning", "info")}
    if not any(counts["error"] + counts["warning"]):
        rows.append(
            ("Doctor", "no ERROR or WARNING finding" + (f" ({len(counts['info'])} info)" if counts["info"] else ""))
        )
    for severity in ("error", "warning", "info"):
        for finding in counts[severity]:
            step = f" (step {finding.step})" if finding.step is not None else ""
            rows.append((f"Doctor {severity.upper()}", f"{finding.id}{step}: {finding.title}"))
    return rows


def summary_html(run: Sequence[tuple[str, str]], headlines: Sequence[Headline]) -> str:
    """The two summary tables."""
    parts = ['<table class="summary" id="run-summary">']
    parts += [f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>" for label, text in run]
    parts.append("</table>")
    if headlines:
        header = ["metric", "direction", "best", "best at", "last", "last at"]
        parts.append('<table class="summary" id="headline-metrics"><tr>')
        parts.append("".join(f"<th>{h}</th>" for h in header) + "</tr>")
        for row in headlines:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row.cells()) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)
