"""What the doctor reports: a :class:`Finding` (id, severity, evidence, fix), how findings print, and the set
of a run's findings (the first report of an id wins; ignored ids are dropped)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# The record itself (and reading it back) is defined in trainwell.records; the doctor adds how findings print.
from trainwell.records.findings import FINDINGS_FILE, SEVERITY_ORDER, Finding, Severity, read_findings
from trainwell.records.jsonl import read_jsonl


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


__all__ = [
    "FINDINGS_FILE",
    "SEVERITY_ORDER",
    "Finding",
    "FindingSet",
    "Severity",
    "format_diagnosis",
    "format_finding",
    "read_findings",
    "read_jsonl",
    "sort_findings",
]
