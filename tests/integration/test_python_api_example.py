"""examples/python_api.py runs (tiny sizes) and trains through the public Python API."""

import subprocess
import sys
from pathlib import Path

from trainwell.records.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


def test_python_api_example_runs(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python_api.py"), "--tiny", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "PA-MPJPE" in run.stdout
    val = read_metrics(tmp_path / "metrics.jsonl")
    val = [r for r in val if r["kind"] == "val"]
    assert len(val) == 2 and val[-1]["mpjpe"] < val[0]["mpjpe"]
    assert (tmp_path / "checkpoints" / "best.pt").exists()
