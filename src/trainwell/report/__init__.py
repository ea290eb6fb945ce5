"""``trainwell report RUN_DIR``: one HTML page with a summary (status, doctor, headline metrics), the run's plots
and per-item charts or tables, and the training doctor's findings.

The page is ``RUN_DIR/report.html``; its PNG figures sit beside it in ``report_files/`` and are referenced
by relative paths, so the folder can be copied or zipped as a whole. It reads only the run's files (see
:func:`trainwell.doctor.offline.diagnose_run`), so it works on finished and running runs alike, and it never
imports the run's task: the metric units come from the run's records (``findings.jsonl``, kind ``context``).
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path

from trainwell.config.expressions import parse_metric_expression
from trainwell.config.loader import config_to_dict
from trainwell.doctor.checks import Thresholds
from trainwell.doctor.offline import RunDiagnosis, diagnose_run
from trainwell.records.findings import Finding
from trainwell.records.status import read_status
from trainwell.report.items import ItemTable
from trainwell.report.summary import headline_metrics, run_rows, summary_html

__all__ = ["write_report"]

FILES_DIR = "report_files"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.finding { border-left: 6px solid #999; padding: 0.4em 0.8em; margin: 0.6em 0; background: #fafafa; }
.error { border-color: #c62828; } .warning { border-color: #ef8f00; } .info { border-color: #1565c0; }
.sev { font-weight: bold; text-transform: uppercase; font-size: 0.8em; }
.ok { border-left: 6px solid #2e7d32; padding: 0.4em 0.8em; background: #f3faf3; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } code, pre { background: #f4f4f4; }
pre { padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; } th { background: #f4f4f4; }
table.items td:not(:first-child) { text-align: right; }
"""


def _finding_html(finding: Finding) -> str:
    step = f" — step {finding.step}" if finding.step is not None else ""
    severity = html.escape(finding.severity)
    return (
        f'<div class="finding {severity}"><span class="sev">{severity}</span> '
        f"<code>{html.escape(finding.id)}</code>{html.escape(step)}: <b>{html.escape(finding.title)}</b><br>"
        f"<i>Evidence:</i> {html.escape(finding.evidence)}<br><i>Fix:</i> {html.escape(finding.fix)}</div>"
    )


def _table_html(table: ItemTable) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f'<table class="items"><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table>'


def _figure_html(caption: str, item: str | ItemTable, alt: str) -> str:
    if isinstance(item, ItemTable):
        return _table_html(item)
    return (
        f'<figure><img src="{html.escape(item)}" alt="{html.escape(alt or caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _page(diagnosis: RunDiagnosis, summary: str, figures: list[tuple[str, str | ItemTable, str]]) -> str:
    name = diagnosis.config.run.name
    task = diagnosis.config.task.class_path
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>trainwell report — {html.escape(str(name))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Run <code>{html.escape(str(name))}</code></h1>",
        f"<p>Task <code>{html.escape(str(task))}</code> · directory <code>{html.escape(str(diagnosis.run_dir))}</code>"
        f" · {html.escape(diagnosis.status)} · report written {datetime.now():%Y-%m-%d %H:%M}</p>",
        "<h2>Summary</h2>",
        summary,
        "<h2>Diagnosis</h2>",
    ]
    if diagnosis.findings:
        parts += [_finding_html(f) for f in diagnosis.findings]
    else:
        parts.append('<div class="ok">The training doctor found no problems.</div>')
    if diagnosis.summary:
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in diagnosis.summary) + "</ul>")
    parts.append("<h2>Plots</h2>")
    if not figures:
        parts.append("<p>No metrics recorded yet.</p>")
    parts += [_figure_html(caption, item, alt) for caption, item, alt in figures]
    parts += [f"<h2>Configuration</h2><pre>{html.escape(_config_text(diagnosis))}</pre>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _config_text(diagnosis: RunDiagnosis) -> str:
    """The run's ``config.yaml`` as written (the task's own keys included), read as text: nothing is imported."""
    try:
        return (diagnosis.run_dir / "config.yaml").read_text(encoding="utf-8")
    except OSError:
        return json.dumps(config_to_dict(diagnosis.config), indent=2, default=str)


def _steps_per_epoch(diagnosis: RunDiagnosis) -> float | None:
    """Optimizer steps per epoch, from the run's planned total and its ``train.epochs`` (``None``: unknown)."""
    total, epochs = diagnosis.context.total_steps, getattr(diagnosis.config.train, "epochs", None)
    if isinstance(total, int) and total > 0 and isinstance(epochs, int) and epochs > 0:
        return total / epochs
    return None


def _alt_text(path: Path) -> str:
    """What the figure's axes say, as :func:`trainwell.report.plots.describe` wrote it into the PNG."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        return str(getattr(image, "text", {}).get("Description", ""))


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (default: in ``run_dir``) and its figures; returns the HTML file's path.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
    """
    from trainwell.report.figures import plot_all  # matplotlib: imported only when a report is drawn

    diagnosis = diagnose_run(run_dir)
    path = Path(out) if out is not None else diagnosis.run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    files = path.parent / FILES_DIR
    eval_cfg = diagnosis.config.eval
    best = parse_metric_expression(eval_cfg.best_metric) if eval_cfg.best_metric else None
    specs = diagnosis.context.metric_specs
    figures = plot_all(
        diagnosis.records,
        files,
        clip=diagnosis.context.clip_grad_norm,
        best=best,
        best_mode=eval_cfg.best_mode,
        update_ratio_high=Thresholds().update_ratio_high,
        specs=specs,
        steps_per_epoch=_steps_per_epoch(diagnosis),
    )
    shown = [
        (caption, item, "") if isinstance(item, ItemTable) else (caption, f"{FILES_DIR}/{item.name}", _alt_text(item))
        for caption, item in figures
    ]
    best_rule = (eval_cfg.best_metric, best, eval_cfg.best_mode) if best is not None else None
    summary = summary_html(
        run_rows(read_status(diagnosis.run_dir), diagnosis.status, diagnosis.findings),
        headline_metrics(diagnosis.records, specs, best_rule),
    )
    path.write_text(_page(diagnosis, summary, shown), encoding="utf-8")
    return path
