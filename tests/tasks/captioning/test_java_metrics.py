"""METEOR through pycocoevalcap's Java scorer, SPICE only when its jars are present, and a stated reason otherwise."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from captioning_helpers import small_task

from trainwell.tasks.captioning import java_scorers
from trainwell.tasks.captioning.evaluator import CaptionEvaluator
from trainwell.tasks.captioning.java_scorers import java_metrics, meteor_scores, spice_unavailable

HAS_JAVA = shutil.which("java") is not None

PREDICTIONS = {
    1: "a dog sits on a bench",
    2: "a man riding a horse on a beach",
    "x.jpg": "two cats",
    3: "a red bus on a street",  # the same as its reference: METEOR 1
    4: "zebra",  # no word in common with its reference: METEOR 0
}
REFERENCES = {
    1: ["a dog on a bench", "a brown dog sitting on a park bench"],
    2: ["a person rides a horse along the shore"],
    "x.jpg": ["two cats sleeping on a sofa", "a pair of kittens"],
    3: ["a red bus on a street"],
    4: ["a plate of food"],
}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAVA, reason="java is not on PATH")
def test_meteor_is_pycocoevalcaps_meteor() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    corpus, per_image = meteor_scores(PREDICTIONS, REFERENCES)
    # identical captions score 1 (no fragmentation penalty for a full match), disjoint ones 0
    assert per_image[3] == pytest.approx(1.0) and per_image[4] == 0.0
    assert 0.0 < per_image[1] < 1.0
    reference = Meteor()
    expected, expected_per_image = reference.compute_score(REFERENCES, {k: [v] for k, v in PREDICTIONS.items()})
    assert corpus == expected
    assert list(per_image.values()) == expected_per_image


def test_without_java_meteor_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java
    values, skipped = java_metrics(PREDICTIONS, REFERENCES, ["meteor"])
    assert values == {}
    assert list(skipped) == ["meteor"] and "java is not on PATH" in skipped["meteor"]


def test_spice_without_its_jars_is_skipped_naming_them_and_downloads_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import urllib.request

    def no_download(*args, **kwargs):
        raise AssertionError("SPICE tried to download")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    spice_dir = tmp_path / "spice"
    (spice_dir / "lib").mkdir(parents=True)
    (spice_dir / "spice-1.0.jar").write_bytes(b"")
    reason = spice_unavailable(spice_dir)
    assert reason is not None
    assert "stanford-corenlp-3.6.0.jar" in reason and "stanford-corenlp-3.6.0-models.jar" in reason
    assert "spice-1.0.jar" not in reason  # present, so not named
    (spice_dir / "lib" / "stanford-corenlp-3.6.0.jar").write_bytes(b"")
    (spice_dir / "lib" / "stanford-corenlp-3.6.0-models.jar").write_bytes(b"")
    assert spice_unavailable(spice_dir) == java_scorers.java_missing()


def test_the_evaluator_reports_a_skipped_metric_as_a_finding(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    real = java_scorers._package_dir
    monkeypatch.setattr(java_scorers, "_package_dir", lambda name: tmp_path if name == "spice" else real(name))
    task = small_task()
    tok, records = task.tokenizer, task.records("val")
    evaluator = CaptionEvaluator(tok, records, width=20, ragged=True, java_metrics=["meteor", "spice"])
    ids = [torch.tensor(tok.encode(r.captions[0])) for r in records]
    evaluator.update(torch.arange(len(records)), ids)
    metrics = evaluator.compute()
    assert "meteor" not in metrics and "spice" not in metrics and metrics["bleu_1"] == pytest.approx(1.0)
    skipped = {f.id: f for f in evaluator.findings if f.id.endswith("_skipped")}
    assert set(skipped) == {"captioning.meteor_skipped", "captioning.spice_skipped"}
    assert "java" in skipped["captioning.meteor_skipped"].title
    assert "stanford-corenlp-3.6.0.jar" in skipped["captioning.spice_skipped"].title
    # not requested: not computed and nothing said
    quiet = CaptionEvaluator(tok, records, width=20, ragged=True)
    quiet.update(torch.arange(len(records)), ids)
    assert "meteor" not in quiet.compute() and not [f for f in quiet.findings if f.id.endswith("_skipped")]


def _run_cli(args: list[str], env: dict) -> "subprocess.CompletedProcess[str]":  # noqa: F821
    import subprocess

    return subprocess.run([sys.executable, "-m", "trainwell", *args], capture_output=True, text=True, env=env)


ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_the_log_and_eval_json_say_which_metric_was_skipped_and_why(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    no_java = {**env, "PATH": str(tmp_path)}  # python is called by its full path; java cannot be found
    config = str(ROOT / "configs/captioning/tiny.yaml")
    small = [f"run.dir={tmp_path}", "train.epochs=1", "data.train_size=64", "data.val_size=8", "task.max_new_tokens=8"]
    small += ["schedule.warmup_steps=1"]
    train = _run_cli(["train", config, *small, "task.meteor=true"], no_java)
    assert train.returncode == 0, train.stderr[-2000:]
    log = next(tmp_path.rglob("train.log")).read_text()
    assert "captioning.meteor_skipped (step 2): METEOR was not computed: java is not on PATH" in log
    checkpoint = next(tmp_path.rglob("last.pt"))
    out = tmp_path / "eval.json"
    result = _run_cli(
        ["eval", config, *small, "task.meteor=true", "--checkpoint", str(checkpoint), "--out", str(out)], no_java
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "METEOR was not computed: java is not on PATH" in result.stdout
    payload = json.loads(out.read_text())
    assert "meteor" not in payload["metrics"]
    skipped = [f for f in payload["findings"] if f["id"].endswith("_skipped")]
    assert [f["id"] for f in skipped] == ["captioning.meteor_skipped"]  # SPICE is off in this config
    assert "java is not on PATH" in skipped[0]["title"]


@pytest.mark.skipif(not HAS_JAVA, reason="java is not on PATH")
def test_ptb_tokenize_is_pycocoevalcaps_java_tokenizer_on_caption_text() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from trainwell.tasks.captioning.scoring import ptb_tokenize

    captions = [
        "A dog's toy is on the couch.",
        "Two men don't like the rain, do they?",
        "A black-and-white cat (sleeping) on a 3.5 inch mat!",
        'A man says "hello" to a woman; she waves.',
        "People walking down a busy street...",
        "The bus is red -- and it's big.",
        "A woman's bag: leather, brown.",
        "a {curly} [square] thing & 50% off",
        "I'm here, you're there, we'll go.",
    ]
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [ptb_tokenize(c) for c in captions] == [java[i][0] for i in range(len(captions))]


def test_a_failing_meteor_is_skipped_with_its_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "java"  # a "java" that fails the way a broken JVM does: a message on stderr, exit status 1
    fake.write_text("#!/bin/sh\necho 'Error: Could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    values, skipped = java_metrics(PREDICTIONS, REFERENCES, ["meteor"])
    assert values == {}
    assert "METEOR stopped answering (java exit status 1)" in skipped["meteor"]
    assert "Could not create the Java Virtual Machine" in skipped["meteor"]
