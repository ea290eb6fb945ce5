"""What a metric's numbers are in, for the report's axes and tables: millimetres, pixels, words, percent.

The unit comes from the run's own records: the task's metric specs that the live doctor saved in ``findings.jsonl``
(kind ``context``), looked up by the metric's full name, then by its group and the group's stems
(``mpjpe_joint/thumb_tip`` → ``mpjpe_joint`` → ``mpjpe``).
A metric the specs do not name gets its unit from its name (``freihand/pa_mpjpe_mm`` → mm; ``ho3d/pa_auc_0_50``,
``pck@20mm``, ``f@5mm`` → a fraction). A fraction (unitless, plausible range 0–1) is drawn and printed as a percentage,
a unitless metric whose plausible range is 0–100 (KITTI AP) as the percentage it already is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Unit", "metric_unit"]

_SUFFIX_UNITS = {"mm": "mm", "px": "px", "m": "m", "deg": "°", "s": "s"}
"""Name endings (``_mm``) → units, for metrics the task's specs do not name."""
_FRACTION_WORDS = re.compile(r"(^|[_/])(auc|pck|f@|pa_f@|recall|precision|accuracy|acc)", re.IGNORECASE)
"""Names that are shares of samples (PCK, AUC of the PCK curve, F-score, recall) when the specs do not say."""


@dataclass(frozen=True)
class Unit:
    """How to show one metric: ``value * scale`` in ``label`` (``""``: a plain number)."""

    label: str = ""
    scale: float = 1.0

    def show(self, value: float) -> str:
        """``value`` with its unit, e.g. ``25.6 mm``, ``48.8 %``, ``0.0509``."""
        shown = f"{value * self.scale:.4g}"
        return f"{shown} {self.label}" if self.label else shown

    def axis(self, name: str) -> str:
        """An axis label: ``mpjpe (mm)``, ``pck@20mm (%)``, ``cider_d`` (no unit: the name alone)."""
        return f"{name} ({self.label})" if self.label else name


PERCENT_OF_FRACTION = Unit("%", 100.0)
PERCENT = Unit("%", 1.0)


def _from_spec(spec: Mapping[str, Any]) -> Unit | None:
    unit = str(spec.get("unit") or "")
    if unit:
        return Unit(unit)
    plausible = spec.get("plausible")
    if isinstance(plausible, list | tuple) and len(plausible) == 2 and plausible[0] == 0:
        if plausible[1] == 1:
            return PERCENT_OF_FRACTION
        if plausible[1] == 100:
            return PERCENT
    return None


def _from_name(name: str) -> Unit | None:
    last = name.rsplit("/", 1)[-1]
    match = re.search(r"_([a-z]+)$", last)
    if match and match.group(1) in _SUFFIX_UNITS:
        return Unit(_SUFFIX_UNITS[match.group(1)])
    if _FRACTION_WORDS.search(name):
        return PERCENT_OF_FRACTION
    return None


def metric_unit(name: str, specs: Mapping[str, Mapping[str, Any]]) -> Unit:
    """The unit of metric ``name`` (see the module docstring); ``Unit()`` when neither specs nor name tell."""
    keys = [name]
    if "/" in name:  # the group, then its stems: mpjpe_joint/thumb_tip → mpjpe_joint → mpjpe
        words = name.split("/", 1)[0].split("_")
        keys += ["_".join(words[:n]) for n in range(len(words), 0, -1)]
    for key in keys:
        if key in specs:
            unit = _from_spec(specs[key])
            if unit is not None:
                return unit
    return _from_name(name) or Unit()
