"""``log.trackers`` through the real ``trainwell train``: one run with MLflow, W&B (offline) and trackio, killed after
step 11 and resumed; every tracker's own store is read back and must hold exactly the scalars of ``metrics.jsonl``
(the TensorBoard tags, at the same steps, each step once), the config as parameters, the final and best metrics, and
the run's report (``report.html`` and its figures) as an artifact.

Both runs are subprocesses (tracker packages are slow to import and keep process-wide state), with ``TRACKIO_DIR`` in
the test's directory.
"""

from __future__ import annotations

import glob
import json
import signal
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_resume import spawn

from trainwell.cli import main
from trainwell.records.metrics import read_metrics

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("trackio")

TRACKED = ["log.trackers=[tensorboard,mlflow,wandb,trackio]", "eval.every=4"]
Series = dict[str, list[tuple[int, float]]]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trackers")
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRACKIO_DIR", str(root / "trackio"))
        env.setenv("WANDB_DIR", str(root))  # nothing of W&B outside the test's directory
        assert spawn(run_dir, TRACKED, {"kill_at_step": 11}) == -signal.SIGKILL
        assert spawn(run_dir, [*TRACKED, "--resume", "auto"], {}) == 0
    return run_dir


# The trackers keep the interrupted run's records of the steps it logged after its checkpoint (step 10 here) and are
# not sent them twice; the resumed run's values are bitwise the same, except the wall-clock ones.
_TIMING = {"Train/steps_per_s", "Train/data_wait_share"}


def expected_series(run_dir: Path) -> Series:
    """The TensorBoard tags of ``metrics.jsonl``'s train and val records: ``Train/<key>``, ``Val/<key>``."""
    series: Series = {}
    for record in read_metrics(run_dir / "metrics.jsonl"):
        prefix = {"train": "Train", "val": "Val"}.get(record["kind"])
        for key, value in record.items():
            if prefix and key not in ("kind", "epoch", "step") and isinstance(value, int | float):
                series.setdefault(f"{prefix}/{key}", []).append((record["step"], float(value)))
    return series


def resolved_config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def ids(run_dir: Path) -> dict[str, str]:
    return json.loads((run_dir / "trackers.json").read_text())["ids"]


def assert_same_series(got: Series, expected: Series, *, after: int = 0) -> None:
    """``got`` holds ``expected`` (the steps after ``after``, when the tracker may have lost the earlier ones)."""
    assert set(got) >= set(expected), sorted(set(expected) - set(got))
    for tag, all_points in expected.items():
        steps = [step for step, _ in got[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice"
        points = sorted(p for p in all_points if p[0] > after)
        got_points = sorted(p for p in got[tag] if p[0] > after)
        assert all(p in all_points or tag in _TIMING for p in got[tag]), tag  # nothing else, nothing wrong
        assert [s for s, _ in got_points] == [s for s, _ in points], tag
        if tag not in _TIMING:
            assert [v for _, v in got_points] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_the_resumed_run_logged_every_step_once_in_metrics_jsonl(tracked_run: Path) -> None:
    expected = expected_series(tracked_run)
    assert [step for step, _ in expected["Train/loss"]] == list(range(2, 19, 2))
    assert "Resumed from" in (tracked_run / "train.log").read_text()
    assert json.loads((tracked_run / "status.json").read_text())["state"] == "finished"


def test_mlflow_store_holds_the_run(tracked_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    run = client.get_run(ids(tracked_run)["mlflow"])
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the resume continued it
    expected = expected_series(tracked_run)
    got = {tag: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)] for tag in expected}
    assert_same_series(got, expected)
    params = run.data.params
    lr = resolved_config(tracked_run)["optim"]["lr"]
    assert params["optim.lr"] == str(lr) and params["train.batch_size"] == "8" and params["eval.every"] == "4"
    best = min(value for _, value in expected["Val/mse"])
    assert run.data.metrics["best/value"] == pytest.approx(best)
    assert run.data.metrics["final/mse"] == pytest.approx(expected["Val/mse"][-1][1])


def _report_rows(html: str) -> dict[str, str]:
    """The first two cells of each row of the report's summary tables (``<tr><th|td>label</…><td>value</td>``)."""
    import re

    cells = re.findall(r"<tr><t[hd]>([^<]*)</t[hd]><td>([^<]*)</td>", html)
    return dict(cells)


def test_mlflow_store_holds_the_report(tracked_run: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    run_id = ids(tracked_run)["mlflow"]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"report.html", "report_files"}
    figures = {Path(a.path).name for a in client.list_artifacts(run_id, "report_files")}
    assert {"losses.png", "lr.png", "validation.png"} <= figures  # the page's relative links resolve in the store
    html = Path(client.download_artifacts(run_id, "report.html", dst_path=str(tmp_path))).read_text()
    rows = _report_rows(html)
    assert rows["Status"] == "finished" and rows["Last step"] == "18"  # written when the resumed run ended
    mse = [value for _, value in expected_series(tracked_run)["Val/mse"]]
    assert rows["best_metric: mse"] == "lower is better" and f"<td>{min(mse):.4g}</td>" in html


def wandb_records(path: str) -> list[Any]:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, out = Path(path).read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def test_wandb_offline_files_hold_the_run(tracked_run: Path) -> None:
    run_id = ids(tracked_run)["wandb"]
    files = sorted(glob.glob(str(tracked_run / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb")))
    # The interrupted run and its resumption, under one W&B run id. W&B's offline writer buffers its file, and a
    # SIGKILLed process loses what it had not flushed (here: the first run's records; a signal-stopped run closes
    # its W&B run and keeps them). The resumed run sends every step after the last one the first run sent (10).
    assert len(files) == 2
    got: Series = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                for tag, value in row.items():
                    if not tag.startswith("_"):
                        got.setdefault(tag, []).append((row["_step"], float(value)))
            elif kind == "run":
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "summary":
                summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    assert_same_series(got, expected_series(tracked_run), after=10)
    assert config["optim"]["lr"] == resolved_config(tracked_run)["optim"]["lr"] and config["eval"]["every"] == 4
    assert summary["best/value"] == pytest.approx(min(v for _, v in expected_series(tracked_run)["Val/mse"]))
    assert summary["final/mse"] == pytest.approx(expected_series(tracked_run)["Val/mse"][-1][1])
    artifacts = [r.artifact for path in files for r in wandb_records(path) if r.WhichOneof("record_type") == "artifact"]
    assert [(a.name, a.type) for a in artifacts] == [("report", "report")]  # once: when the resumed run ended
    paths = {entry.path for entry in artifacts[0].manifest.contents}
    assert {"report.html", "report_files/losses.png", "report_files/validation.png"} <= paths


def test_trackio_store_holds_the_run(tracked_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trackio import sqlite_storage
    from trackio.sqlite_storage import SQLiteStorage

    # trackio reads $TRACKIO_DIR once, when imported: point this process's reader at the runs' store.
    monkeypatch.setattr(sqlite_storage, "TRACKIO_DIR", tracked_run.parent / "trackio")
    name = ids(tracked_run)["trackio"]
    assert SQLiteStorage.get_runs("trainwell") == [name]
    got: Series = {}
    summary: dict[str, tuple[int, float]] = {}
    for row in SQLiteStorage.get_logs("trainwell", name):
        for tag, value in row.items():
            if tag.startswith(("final/", "best/")):
                summary[tag] = (row["step"], float(value))  # trackio has no summary: logged at the last step
            elif tag not in ("step", "timestamp"):
                got.setdefault(tag, []).append((row["step"], float(value)))
    expected = expected_series(tracked_run)
    assert_same_series(got, expected)
    assert summary["best/value"] == (18, pytest.approx(min(v for _, v in expected["Val/mse"])))
    assert summary["final/mse"] == (18, pytest.approx(expected["Val/mse"][-1][1]))
    config = SQLiteStorage.get_run_config("trainwell", name)
    assert config["optim"]["lr"] == resolved_config(tracked_run)["optim"]["lr"] and config["eval"]["every"] == 4
    manifest = SQLiteStorage.get_artifact_manifest("trainwell", "report", None)
    assert manifest is not None, SQLiteStorage.get_artifacts("trainwell")
    assert {"report.html", "report_files/losses.png"} <= {entry["path"] for entry in manifest["manifest"]}


def test_a_tracker_named_but_not_installed_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util

    import trainwell.trackers as trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    from small_run import CONFIG

    assert main(["train", CONFIG, "log.trackers=[wandb]", f"run.dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "log.trackers names wandb" in err and "pip install 'trainwell[trackers]'" in err
    assert main(["train", CONFIG, "log.trackers=[neptune]"]) == 2
    assert "log.trackers[0]" in capsys.readouterr().err


def test_only_rank_0_builds_and_feeds_trackers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun the CLI builds no tracker on ranks > 0, and the engine's recorder of a process that writes no
    run directory (every rank but 0) starts none and sends nothing."""
    from small_run import CONFIG

    from trainwell import cli
    from trainwell.engine.trackers import TrackerRecorder
    from trainwell.experiment import load_config

    cfg = load_config(CONFIG, ["log.trackers=[tensorboard,mlflow]"])
    for rank, expected in ((1, []), (0, ["mlflow"])):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert [t.name for t in cli._trackers(cfg)] == expected, rank

    class Loud:
        name = "loud"

        def __getattr__(self, attribute: str) -> Any:
            raise AssertionError(f"a rank without a run directory called tracker.{attribute}")

    recorder = TrackerRecorder([Loud()], None)  # type: ignore[list-item]
    recorder.start({"optim.lr": 0.1}, resumed=False)
    recorder.write("train", 2, {"loss": 1.0})
    recorder.finish("finished", {"final/mse": 1.0}, 2)
    assert recorder.trackers == [] and recorder.ids == {}
