"""What the doctor reports: a :class:`Finding` (id, severity, evidence, fix), how findings print, and the set
of a run's findings (the first report of an id wins; ignored ids are dropped)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

FINDINGS_FILE = "findings.jsonl"
"""Every finding of a run, one JSON object per line (and the run context, ``kind: context``)."""

Severity = Literal["info", "warning", "error"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One diagnosed problem: what, how sure (severity), the numbers that show it, and what to do.

    Attributes:
        id: stable dotted name, e.g. ``"loss.not_decreasing"`` (``diagnostics.ignore`` takes these).
        severity: ``"error"`` (the run is broken), ``"warning"`` (probably wrong), ``"info"``.
        title: one line saying what is wrong.
        evidence: the numbers and steps that show it.
        fix: the suggested fix.
        step: optimizer step at which it was detected (``None``: before training / not tied to a step).
    """

    id: str
    severity: Severity
    title: str
    evidence: str
    fix: str
    step: int | None = None

    @property
    def is_severe(self) -> bool:
        """Errors are severe: ``trainwell doctor`` exits non-zero when one exists."""
        return self.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(**{key: data.get(key) for key in ("id", "severity", "title", "evidence", "fix", "step")})


# -- presentation ---------------------------------------------------------------------------------------
def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Most severe first, then by step."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), f.step if f.step is not None else -1))


def format_finding(finding: Finding, *, indent: str = "  ") -> list[str]:
    where = f" (step {finding.step})" if finding.step is not None else ""
    return [
        f"[{finding.severity.upper()}] {finding.id}{where}: {finding.title}",
        f"{indent}evidence: {finding.evidence}",
        f"{indent}fix: {finding.fix}",
    ]


def format_diagnosis(findings: Sequence[Finding], summary: Sequence[str] = ()) -> list[str]:
    """The end-of-run "Diagnosis" section (also what ``trainwell doctor`` prints)."""
    findings = sort_findings(findings)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    head = f"Diagnosis (training doctor): {errors} error(s), {warnings} warning(s)"
    lines = [head if findings else "Diagnosis (training doctor): no problems found"]
    for finding in findings:
        lines.extend(format_finding(finding))
    if summary:
        lines.append("Run summary: " + "; ".join(summary))
    return lines


@dataclass
class FindingSet:
    """Findings keyed by id (the first report of an id wins), minus the ignored ids / id prefixes."""

    ignore: Sequence[str] = ()
    items: dict[str, Finding] = field(default_factory=dict)

    def is_ignored(self, finding_id: str) -> bool:
        return any(finding_id == p or finding_id.startswith(p.rstrip(".") + ".") for p in self.ignore)

    def add(self, finding: Finding) -> bool:
        """Add or update ``finding`` (a later report of an id replaces the earlier one, e.g. with a larger
        count); ``True`` if the id is new (and not ignored)."""
        if self.is_ignored(finding.id):
            return False
        new = finding.id not in self.items
        self.items[finding.id] = finding
        return new

    def all(self) -> list[Finding]:
        return sort_findings(list(self.items.values()))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; a torn last line (a running or killed run) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def read_findings(path: Path, *, keep_merged: bool = False) -> dict[str, Finding]:
    """The findings a run wrote to ``findings.jsonl`` (the last line of each id), minus those that later resolved
    (``{"kind": "resolved", "id", "step", "why"}``: the condition no longer held) and, unless ``keep_merged``, the
    symptoms the run folded into their cause (``{"kind": "merged", "id", "into"}``)."""
    found: dict[str, Finding] = {}
    for data in read_jsonl(path):
        kind = data.get("kind")
        if kind == "finding":
            found[data["id"]] = Finding.from_dict(data)
        elif kind == "resolved" or (kind == "merged" and not keep_merged):
            found.pop(str(data.get("id")), None)
    return found
