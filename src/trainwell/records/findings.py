"""``findings.jsonl``: what the doctor found in a run, and what it needs to read the run back without its code.

Lines, after the schema line: ``context`` (the run's shape and the task's metric specs, once per process start),
``reference`` (the first batch's reference losses), ``finding`` (a :class:`Finding`; a later line of the same id
updates it), ``merged`` (a symptom folded into its cause: ``id``, ``into``) and ``resolved`` (the condition no longer
held: ``id``, ``step``, ``why``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from trainwell.records.jsonl import read_versioned

FINDINGS_FILE = "findings.jsonl"
FINDINGS_VERSION = 1
"""1: the schema line, then the line kinds above (0: the same lines without it)."""

Severity = Literal["info", "warning", "error"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}
LineKind = Literal["context", "reference", "finding", "merged", "resolved"]


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
        step = data.get("step")
        return cls(
            id=str(data["id"]),
            severity=data["severity"],
            title=str(data.get("title", "")),
            evidence=str(data.get("evidence", "")),
            fix=str(data.get("fix", "")),
            step=int(step) if step is not None else None,
        )


def findings_line(kind: LineKind, data: Mapping[str, Any] | Finding) -> dict[str, Any]:
    """One line of ``kind``: a :class:`Finding`, or the fields of the other kinds."""
    fields = data.to_dict() if isinstance(data, Finding) else dict(data)
    return {"kind": kind, **fields}


def read_finding_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a ``findings.jsonl`` but the schema line.

    Raises:
        RecordVersionError: written by a newer trainwell.
    """
    return read_versioned(path, FINDINGS_VERSION)[1]


def read_findings(path: Path, *, keep_merged: bool = False) -> dict[str, Finding]:
    """The findings a run wrote (the last line of each id), minus those that later resolved and, unless
    ``keep_merged``, the symptoms the run folded into their cause."""
    found: dict[str, Finding] = {}
    for data in read_finding_lines(path):
        kind = data.get("kind")
        if kind == "finding":
            found[data["id"]] = Finding.from_dict(data)
        elif kind == "resolved" or (kind == "merged" and not keep_merged):
            found.pop(str(data.get("id")), None)
    return found
