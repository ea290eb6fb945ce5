"""A finding whose condition no longer holds is resolved: said in the log, recorded in ``findings.jsonl``, left out of
the Diagnosis (live and ``trainwell doctor``); one that still holds at the end stays."""

from __future__ import annotations

import logging
from pathlib import Path

from trainwell.config.schema import DiagnosticsConfig
from trainwell.doctor.checks import RunContext
from trainwell.doctor.findings import Finding, read_findings, read_jsonl
from trainwell.doctor.live import TrainingDoctor
from trainwell.engine.distributed import DistEnv

WORDS = {"caption_words": {"unit": "words", "higher_is_better": True, "plausible": [1.0, 100.0]}}


class _Task:
    def metric_specs(self) -> dict[str, object]:
        from types import SimpleNamespace

        return {"caption_words": SimpleNamespace(unit="words", higher_is_better=True, plausible=(1.0, 100.0))}


def _doctor(run_dir: Path) -> TrainingDoctor:
    doctor = TrainingDoctor(
        DiagnosticsConfig(),
        context=RunContext(total_steps=30, metric_specs=WORDS),
        env=DistEnv(),
        run_dir=run_dir,
        log=logging.getLogger("test_resolved"),
        task=_Task(),
    )
    doctor.on_fit_start(resumed=False)
    return doctor


def _evaluate(doctor: TrainingDoctor, step: int, words: float, noticed: list[Finding]) -> None:
    doctor.on_validation({"kind": "val", "epoch": step // 10, "step": step, "caption_words": words})
    doctor.report(noticed)


EMPTY = Finding("captioning.empty_generations", "warning", "Many generated captions are empty", "75% empty", "fix")


def test_an_early_implausible_evaluation_that_recovers_is_resolved(tmp_path: Path, caplog) -> None:
    doctor = _doctor(tmp_path)
    _evaluate(doctor, 10, 0.6, [EMPTY])
    assert set(doctor.findings.items) == {"val.implausible", "captioning.empty_generations"}
    with caplog.at_level(logging.INFO, logger="test_resolved"):
        _evaluate(doctor, 20, 6.0, [])
    assert "resolved: val.implausible" in caplog.text and "resolved: captioning.empty_generations" in caplog.text
    assert doctor.finish() == []
    lines = read_jsonl(tmp_path / "findings.jsonl")
    assert {(r["id"], r["step"]) for r in lines if r.get("kind") == "resolved"} == {
        ("val.implausible", 20),
        ("captioning.empty_generations", 20),
    }
    assert read_findings(tmp_path / "findings.jsonl") == {}


def test_a_condition_that_holds_at_the_end_is_still_reported(tmp_path: Path) -> None:
    doctor = _doctor(tmp_path)
    _evaluate(doctor, 10, 6.0, [])
    _evaluate(doctor, 20, 0.5, [EMPTY])
    ids = {f.id for f in doctor.finish()}
    assert ids == {"val.implausible", "captioning.empty_generations"}
    assert set(read_findings(tmp_path / "findings.jsonl")) == ids


def test_a_resolved_finding_that_comes_back_is_reported_again(tmp_path: Path) -> None:
    doctor = _doctor(tmp_path)
    _evaluate(doctor, 10, 6.0, [EMPTY])
    _evaluate(doctor, 20, 6.0, [])
    _evaluate(doctor, 30, 6.0, [EMPTY])
    assert [f.id for f in doctor.finish()] == ["captioning.empty_generations"]
    assert set(read_findings(tmp_path / "findings.jsonl")) == {"captioning.empty_generations"}
