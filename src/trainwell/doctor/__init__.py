"""The training doctor: findings, live checks (it observes; the loop decides), batch checks, offline diagnosis."""

from trainwell.doctor.findings import Finding, FindingSet, Severity, format_diagnosis, format_finding, sort_findings

__all__ = ["Finding", "FindingSet", "Severity", "format_diagnosis", "format_finding", "sort_findings"]
