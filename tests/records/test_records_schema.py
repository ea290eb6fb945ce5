"""The records a run writes are the ones trainwell.records defines, and readers refuse versions they do not know.

A real run writes the files; the assertions are the schema itself, spelled out here (the field names and types a
reader relies on), so a writer that drifts from it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainwell.cli import main
from trainwell.records import (
    CHECKPOINT_FORMAT,
    METRICS_VERSION,
    CheckpointMeta,
    RecordVersionError,
    read_findings,
    read_metrics,
    read_status,
)
from trainwell.records.findings import read_finding_lines

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.train_size=32",
    "data.val_size=16",
    "train.batch_size=8",
    "train.epochs=2",
    "train.log_every=2",
    "train.progress_bar=off",
    "schedule.warmup_steps=2",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records") / "run"
    code = main(["train", str(ROOT / "configs/examples/regression.yaml"), f"run.dir={path}", *TINY])
    assert code == 0
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_metrics_lines_follow_the_schema(run_dir: Path) -> None:
    lines = _lines(run_dir / "metrics.jsonl")
    assert lines[0] == {"kind": "schema", "version": METRICS_VERSION}
    body = lines[1:]
    assert {line["kind"] for line in body} == {"train", "val"}
    for line in body:
        assert isinstance(line["epoch"], int) and 1 <= line["epoch"] <= 2
        assert isinstance(line["step"], int) and 0 <= line["step"] <= 8
    assert [line["step"] for line in body if line["kind"] == "train"] == [2, 4, 6, 8]
    assert read_metrics(run_dir / "metrics.jsonl") == body  # the reader drops the schema line, nothing else


def test_status_and_findings_carry_their_versions(run_dir: Path) -> None:
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status["version"] == 1 and status["state"] == "finished" and status["step"] == 8
    assert read_status(run_dir) == status
    lines = _lines(run_dir / "findings.jsonl")
    assert lines[0] == {"kind": "schema", "version": 1}
    assert {line["kind"] for line in lines[1:]} <= {"context", "reference", "finding", "merged", "resolved"}
    assert "context" in {line["kind"] for line in lines[1:]}
    assert read_finding_lines(run_dir / "findings.jsonl") == lines[1:]


def test_checkpoint_keys_are_the_declared_ones(run_dir: Path) -> None:
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert payload["format"] == CHECKPOINT_FORMAT
    declared = set(CheckpointMeta.__annotations__)
    assert set(payload) <= declared, sorted(set(payload) - declared)
    assert {"format", "model", "optimizer", "train_state", "rng", "config", "versions"} <= set(payload)
    assert payload["train_state"]["global_step"] == 8


def test_eval_output_is_versioned(run_dir: Path, tmp_path: Path) -> None:
    from trainwell.records import read_eval_output

    out = tmp_path / "eval.json"
    cfg = str(run_dir / "config.yaml")
    assert main(["eval", cfg, "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--out", str(out)]) == 0
    record = read_eval_output(out)
    assert record["version"] == 1 and record["split"] == "val" and record["num_samples"] == 16
    fields = {"version", "split", "num_samples", "world_size", "metrics", "checkpoint", "outputs", "findings"}
    assert set(record) == fields


def test_files_from_before_versions_are_read(tmp_path: Path) -> None:
    # version 0: the same lines without the schema line (and status without "version")
    lines = [{"kind": "train", "epoch": 1, "step": 2, "loss": 1.0}, {"kind": "val", "epoch": 1, "step": 2, "mse": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"kind": "tr', "utf-8")
    (tmp_path / "status.json").write_text('{"state": "finished", "step": 2}', "utf-8")
    finding = {"kind": "finding", "id": "a.b", "severity": "warning", "title": "t", "evidence": "e", "fix": "f"}
    (tmp_path / "findings.jsonl").write_text(json.dumps(finding) + "\n", "utf-8")
    assert read_metrics(tmp_path / "metrics.jsonl") == lines  # the torn last line is not a record
    assert read_status(tmp_path) == {"state": "finished", "step": 2}
    assert read_findings(tmp_path / "findings.jsonl")["a.b"].severity == "warning"


@pytest.mark.parametrize("name", ["metrics.jsonl", "findings.jsonl", "status.json"])
def test_newer_versions_are_refused_by_name(tmp_path: Path, name: str) -> None:
    (tmp_path / "config.yaml").write_text("task:\n  class_path: nowhere:Task\n", "utf-8")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "epoch": 1, "step": 1, "loss": 1.0}\n', "utf-8")
    if name == "status.json":
        (tmp_path / name).write_text('{"version": 7, "state": "finished"}', "utf-8")
    else:
        (tmp_path / name).write_text('{"kind": "schema", "version": 7}\n', "utf-8")
    with pytest.raises(RecordVersionError, match="version 7"):
        if name == "status.json":
            read_status(tmp_path)
        elif name == "metrics.jsonl":
            read_metrics(tmp_path / name)
        else:
            read_finding_lines(tmp_path / name)
    # what a user sees: one line naming the file and the versions, exit 1, no traceback
    done = subprocess.run(
        [sys.executable, "-m", "trainwell", "doctor", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert f"'{tmp_path / name}' holds records of version 7" in done.stderr
    assert "reads versions up to 1" in done.stderr and "Traceback" not in done.stderr
