"""The report's summary and axes, checked against run records written by the test itself: the status and the doctor's
findings in the summary table, each headline metric's best and last value with its step (fractions as %), a unit on
every axis (steps, epochs, mm, %), legends outside the axes, groups that mix units split by unit, and KITTI-style
metrics pivoted per class and difficulty."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from trainwell.cli import main

JOINTS = ["wrist", "thumb_tip", "index_tip"]
SPECS = {
    "mpjpe": {"unit": "mm", "higher_is_better": False, "plausible": [0.0, 1000.0]},
    "pck@20mm": {"unit": "", "higher_is_better": True, "plausible": [0.0, 1.0]},
    "Car_3d/easy_R40": {"unit": "", "higher_is_better": True, "plausible": [0.0, 100.0]},
    # KITTI AP is a percentage already (plausible 0-100), as the detection task declares it
    **{f"kitti/Car_3d_{d}_R11_50": {"unit": "", "plausible": [0.0, 100.0]} for d in ("easy", "moderate", "hard")},
}


class _Page(HTMLParser):
    """Table rows by table id (and ``items`` tables in order), and every image's ``src`` → ``alt``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._count += 1
            self._table = a.get("id") or f"table{self._count}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images[str(a["src"])] = str(a.get("alt"))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def _write_run(run_dir: Path) -> list[dict]:
    (run_dir / "config.yaml").write_text(
        "train: {epochs: 4}\neval: {best_metric: mpjpe, best_mode: min}\n", encoding="utf-8"
    )
    records: list[dict] = []
    mpjpe = [40.0, 18.0, 25.0, 30.0]  # best at the second evaluation, last is worse
    pck = [0.2, 0.45, 0.5, 0.4]  # best at the third
    for epoch in range(1, 5):
        step = 10 * epoch
        records.append(
            {
                "kind": "train",
                "epoch": epoch,
                "step": step,
                "loss": 10.0 / epoch,
                "loss/a": 5.0 / epoch,
                "loss/b": 5.0 / epoch,
                "lr": 1e-3,
                "grad_norm": 2.0,
                "clip_rate": 0.5,
            }
        )
        records.append(
            {
                "kind": "val",
                "epoch": epoch,
                "step": step,
                "mpjpe": mpjpe[epoch - 1],
                "pck@20mm": pck[epoch - 1],
                **{f"mpjpe_joint/{j}": 10.0 + k for k, j in enumerate(JOINTS)},
                "freihand/pa_mpjpe_mm": 12.0,
                "freihand/pa_auc_0_50": 0.7,
                **{f"{c}_3d/{d}_R40": 10.0 * k for k, c in enumerate(["Car", "Pedestrian"]) for d in ["easy", "hard"]},
                **{
                    f"kitti/Car_3d_{d}_R{r}_{i}": 1.0
                    for d in ["easy", "moderate", "hard"]
                    for r in range(11, 41)
                    for i in (50, 70)
                },
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    findings = [
        {"kind": "context", "total_steps": 40, "log_every": 10, "clip_grad_norm": 1.0, "metric_specs": SPECS},
        {
            "kind": "finding",
            "id": "made.up_warning",
            "severity": "warning",
            "title": "A warning the test planted",
            "evidence": "the test wrote it",
            "fix": "none",
            "step": 30,
        },
    ]
    (run_dir / "findings.jsonl").write_text("".join(json.dumps(f) + "\n" for f in findings))
    status = {"state": "early_stopped", "step": 40, "reason": "no improvement of mpjpe in 2 evaluations"}
    (run_dir / "status.json").write_text(json.dumps(status))
    return records


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[_Page, list[dict]]:
    run_dir = tmp_path_factory.mktemp("summary")
    records = _write_run(run_dir)
    assert main(["report", str(run_dir)]) == 0
    parsed = _Page()
    parsed.feed((run_dir / "report.html").read_text(encoding="utf-8"))
    return parsed, records


def test_the_summary_holds_the_status_and_the_doctors_findings(page: tuple[_Page, list[dict]]) -> None:
    rows = dict((r[0], r[1]) for r in page[0].tables["run-summary"])
    assert rows["Status"] == "early_stopped" and rows["Last step"] == "40"
    assert rows["Reason"] == "no improvement of mpjpe in 2 evaluations"
    assert rows["Doctor WARNING"] == "made.up_warning (step 30): A warning the test planted"


def test_the_headline_metrics_are_best_and_last_with_their_steps(page: tuple[_Page, list[dict]]) -> None:
    parsed, records = page
    val = [r for r in records if r["kind"] == "val"]
    table = {row[0]: row[1:] for row in parsed.tables["headline-metrics"][1:]}
    low = min(val, key=lambda r: r["mpjpe"])
    assert table["mpjpe"] == [
        "lower is better",
        f"{low['mpjpe']:g} mm",
        f"step {low['step']} (epoch {low['epoch']})",
        f"{val[-1]['mpjpe']:g} mm",
        f"step {val[-1]['step']}",
    ]
    high = max(val, key=lambda r: r["pck@20mm"])
    assert table["pck@20mm"][:3] == [
        "higher is better",
        f"{100 * high['pck@20mm']:g} %",
        f"step {high['step']} (epoch 3)",
    ]
    assert table["pck@20mm"][3] == f"{100 * val[-1]['pck@20mm']:g} %"
    assert table["best_metric: mpjpe"][1:3] == table["mpjpe"][1:3]
    assert table["train loss"][1:3] == [f"{10.0 / 4:g}", "step 40 (epoch 4)"]


def test_every_axis_has_its_unit_and_no_legend_covers_data(page: tuple[_Page, list[dict]]) -> None:
    alts = {Path(src).name: alt for src, alt in page[0].images.items()}
    for name in ("losses.png", "lr.png", "gradients.png", "validation.png"):
        assert "x optimizer step" in alts[name] and "x epoch" in alts[name], (name, alts[name])
        assert "legend inside" not in alts[name]
    assert "legend outside the axes" in alts["losses.png"] and "legend outside the axes" in alts["gradients.png"]
    assert "y mpjpe (mm)" in alts["validation.png"] and "y pck@20mm (%)" in alts["validation.png"]
    assert "y clipped steps (%)" in alts["gradients.png"]
    assert "x mpjpe_joint (mm)" in alts["group_mpjpe_joint.png"]
    # FreiHAND's group mixes an error in mm and an AUC (a fraction): one chart per unit.
    assert "x freihand (mm)" in alts["group_freihand_mm.png"] and "x freihand (%)" in alts["group_freihand_pct.png"]


def test_detection_metrics_are_pivoted_per_class_and_difficulty(page: tuple[_Page, list[dict]]) -> None:
    parsed = page[0]
    alts = {Path(src).name: alt for src, alt in parsed.images.items()}
    assert "x value (%)" in alts["pivot_R40.png"] and "legend outside the axes" in alts["pivot_R40.png"]
    # 60 rows of one class (30 recall grids × 2 IoU thresholds): too many for a chart, so a table, rows × difficulty.
    items = [rows for name, rows in parsed.tables.items() if name.startswith("table")]
    assert len(items) == 1
    header, *rows = items[0]
    assert header == ["", "easy", "moderate", "hard"] and len(rows) == 60
    assert rows[0] == ["Car 3d R11 50", "1 %", "1 %", "1 %"]


def test_reading_a_run_runs_none_of_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The run's task module and a checkpoint that would execute code when unpickled: the report touches neither.
    import pickle
    import sys

    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('imported')\n"
    (tmp_path / "planted_task_module.py").write_text(code + "class Task: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_run(run_dir)
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(config + "task: {class_path: 'planted_task_module:Task'}\n")

    class _Planted:
        def __reduce__(self):
            return (exec, (code,))

    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "best.pt").write_bytes(pickle.dumps(_Planted()))
    assert main(["report", str(run_dir)]) == 0
    assert not marker.exists() and "planted_task_module" not in sys.modules
    assert "planted_task_module:Task" in (run_dir / "report.html").read_text()  # named, as text
