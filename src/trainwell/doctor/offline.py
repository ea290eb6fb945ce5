"""``trainwell doctor RUN_DIR``: the findings of a finished or running run, from its files alone.

It never imports the run's task (``task.class_path`` stays a string): reading a run runs none of its code.
It reads ``config.yaml`` back through the base schema as plain YAML, ``status.json`` (how the run ended, written
by the loop), ``findings.jsonl`` (the live doctor's findings and the run context, with the task's metric units
and ranges) and ``metrics.jsonl``; nothing parses ``train.log``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwell.config.loader import read_run_config
from trainwell.config.schema import ExperimentConfig
from trainwell.doctor.checks import RunContext, check_history, summarize_history
from trainwell.doctor.divergence import consolidate
from trainwell.doctor.findings import FINDINGS_FILE, Finding, FindingSet, format_diagnosis, read_findings
from trainwell.engine.rundir import describe_status
from trainwell.records.findings import read_finding_lines
from trainwell.records.metrics import METRICS_FILE, read_metrics
from trainwell.records.status import read_status


@dataclass
class RunDiagnosis:
    """What ``trainwell doctor`` and ``trainwell report`` know about a run directory."""

    run_dir: Path
    status: str
    config: ExperimentConfig
    context: RunContext
    records: list[dict[str, Any]]
    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def has_severe(self) -> bool:
        return any(f.is_severe for f in self.findings)

    def lines(self) -> list[str]:
        return [f"Run {self.run_dir} ({self.status})", *format_diagnosis(self.findings, self.summary)]


def diagnose_run(run_dir: str | Path) -> RunDiagnosis:
    """Findings for a finished or running run from its files (metrics.jsonl, findings.jsonl, config.yaml, status.json).

    Raises:
        FileNotFoundError: ``run_dir`` holds neither ``metrics.jsonl`` nor ``config.yaml``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"'{run_dir}' is not a trainwell run directory (no metrics.jsonl or config.yaml in it); pass the "
            "directory a run printed as 'run directory: ...'."
        )
    config = read_run_config(run_dir / "config.yaml")
    saved = read_finding_lines(run_dir / FINDINGS_FILE)
    contexts = [r for r in saved if r.get("kind") == "context"]
    fields_known = RunContext.__dataclass_fields__
    context = RunContext(**{k: v for k, v in contexts[-1].items() if k in fields_known}) if contexts else RunContext()
    references = [r for r in saved if r.get("kind") == "reference"]
    if references:
        reference = {k: float(v) for k, v in references[-1].items() if k != "kind" and isinstance(v, int | float)}
        context = dataclasses.replace(context, reference=reference)
    run_status = read_status(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    status = describe_status(run_status)
    findings = FindingSet(ignore=tuple(config.diagnostics.ignore))
    for finding in read_findings(run_dir / FINDINGS_FILE, keep_merged=True).values():
        findings.add(finding)
    crashed = _crash_finding(run_status)
    if crashed is not None:
        findings.add(crashed)
    ended = run_status.get("state") not in (None, "running")
    # Recomputed history findings replace the saved ones (whose evidence may already hold folded symptoms).
    for finding in check_history(records, context, final=ended, cores=os.cpu_count()):
        findings.add(finding)
    return RunDiagnosis(
        run_dir=run_dir,
        status=status,
        config=config,
        context=context,
        records=records,
        findings=consolidate(findings.all())[0],
        summary=summarize_history(records, context),
    )


def _crash_finding(status: dict[str, Any]) -> Finding | None:
    """``run.crashed`` (an error, so ``trainwell doctor`` exits non-zero) for a run whose status says it crashed."""
    if status.get("state") != "crashed":
        return None
    step = status.get("step") if isinstance(status.get("step"), int) else None
    return Finding(
        "run.crashed",
        "error",
        "The run crashed" + (" before training started" if not step else f" at step {step}"),
        f"status.json: {status.get('error', 'no error message recorded')}",
        "Fix what the error names, then continue with `trainwell train CONFIG run.dir=RUN_DIR --resume auto` "
        "(it starts afresh when no checkpoint was written).",
        step,
    )
