"""METEOR and SPICE: pycocoevalcap's Java scorers, run when they can run, and a stated reason when they cannot.

METEOR is ``meteor-1.5.jar`` as pycocoevalcap ships it (with ``data/paraphrase-en.gz``), driven over its ``-stdio``
protocol with the command line pycocoevalcap's ``Meteor`` uses (``-l en -norm``, 2 GB heap): one ``SCORE`` line per
image answers that image's sufficient statistics, one ``EVAL`` line with all of them answers the per-image scores
and then the corpus score, which is the number COCO reports. It needs ``java`` on ``PATH``; starting the JVM and
loading the paraphrase table costs ~5–10 s, so it runs once per evaluation, on rank 0 (where the evaluator's
``compute`` runs).

SPICE is pycocoevalcap's ``Spice`` (``spice-1.0.jar``), which also needs Stanford CoreNLP 3.6.0 in its ``lib/``
folder. pycocoevalcap downloads CoreNLP when it is missing; nothing may be downloaded at run time here, so the jars
are checked first and SPICE is skipped, with the missing files named, when they are absent.

Both take the same tokenised text as BLEU/ROUGE-L/CIDEr-D (:func:`.scoring.ptb_tokenize`), as pycocoevalcap's
``COCOEvalCap`` hands every scorer its PTB-tokenised captions.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from trainwell.tasks.captioning.scoring import ptb_tokenize

JAVA_METRICS = ("meteor", "spice")
"""The Java-based metrics, by the name they get in the metrics."""

METEOR_JAR = "meteor-1.5.jar"
METEOR_PARAPHRASES = Path("data") / "paraphrase-en.gz"
METEOR_TIMEOUT_S = 600.0
"""A METEOR process still running after this long is killed and METEOR reported as skipped (a hung JVM must not
hold the other processes of a distributed run at the end of an evaluation)."""
SPICE_JAR = "spice-1.0.jar"
SPICE_CORENLP = (Path("lib") / "stanford-corenlp-3.6.0.jar", Path("lib") / "stanford-corenlp-3.6.0-models.jar")


def _package_dir(name: str) -> Path | None:
    """The folder of ``pycocoevalcap.<name>`` (``meteor``, ``spice``), or ``None`` without pycocoevalcap."""
    try:
        import pycocoevalcap
    except ImportError:
        return None
    return Path(next(iter(pycocoevalcap.__path__))) / name  # a namespace package: no __file__


def java_missing() -> str | None:
    """Why Java scorers cannot run (``java`` not on ``PATH``), or ``None`` when they can."""
    if shutil.which("java") is None:
        return "java is not on PATH (install a Java runtime, e.g. OpenJDK 17, to compute it)"
    return None


def meteor_unavailable(meteor_dir: Path | None = None) -> str | None:
    """Why METEOR cannot run here, or ``None``."""
    meteor_dir = meteor_dir or _package_dir("meteor")
    if meteor_dir is None:
        return "pycocoevalcap is not installed"
    missing = [str(meteor_dir / p) for p in (Path(METEOR_JAR), METEOR_PARAPHRASES) if not (meteor_dir / p).is_file()]
    if missing:
        return f"pycocoevalcap's METEOR files are missing: {', '.join(missing)}"
    return java_missing()


def spice_unavailable(spice_dir: Path | None = None) -> str | None:
    """Why SPICE cannot run here (checked without downloading anything), or ``None``."""
    spice_dir = spice_dir or _package_dir("spice")
    if spice_dir is None:
        return "pycocoevalcap is not installed"
    needed = (Path(SPICE_JAR), *SPICE_CORENLP)
    missing = [str(spice_dir / p) for p in needed if not (spice_dir / p).is_file()]
    if missing:
        return (
            f"its jars are missing: {', '.join(missing)} (Stanford CoreNLP 3.6.0; pycocoevalcap would download it, "
            "which trainwell never does at run time: put stanford-corenlp-3.6.0.jar and its -models.jar there)"
        )
    return java_missing()


def _stopped(proc: subprocess.Popen, stderr: IO[bytes]) -> RuntimeError:
    """The error of a METEOR process that stopped answering: its exit status and the end of its stderr."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)  # it closed its pipes: it is exiting (or was killed)
    stderr.seek(0)
    tail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    return RuntimeError(f"METEOR stopped answering (java exit status {proc.poll()}): {' / '.join(tail)}")


def _read_line(proc: subprocess.Popen, stderr: IO[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line:
        raise _stopped(proc, stderr)
    return line


def _send(proc: subprocess.Popen, stderr: IO[bytes], line: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write((line + "\n").encode())
        proc.stdin.flush()
    except BrokenPipeError:
        raise _stopped(proc, stderr) from None


def _segment(hypothesis: str, references: Sequence[str]) -> str:
    # "|||" separates the fields of the protocol; pycocoevalcap removes it from the hypothesis the same way
    fields = ["SCORE", *(r.replace("|||", "") for r in references), hypothesis.replace("|||", "").replace("  ", " ")]
    return " ||| ".join(fields)


def meteor_scores(
    predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]], meteor_dir: Path | None = None
) -> tuple[float, dict[Any, float]]:
    """``(corpus METEOR 1.5, {image id: METEOR})`` of tokenised ``predictions`` (one each) against tokenised
    ``references``, as pycocoevalcap's ``Meteor.compute_score`` returns them. ``RuntimeError`` when it fails."""
    meteor_dir = meteor_dir or _package_dir("meteor")
    assert meteor_dir is not None
    command = ["java", "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
    ids = list(predictions)
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty JVM cannot block on it
        proc = subprocess.Popen(command, cwd=meteor_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdin is not None
        watchdog = threading.Timer(METEOR_TIMEOUT_S, proc.kill)  # a killed process answers EOF: RuntimeError below
        watchdog.start()
        try:
            stats = []
            for image_id in ids:
                _send(proc, stderr, _segment(predictions[image_id], references[image_id]))
                stats.append(_read_line(proc, stderr))
            _send(proc, stderr, " ||| ".join(["EVAL", *stats]))
            per_image = {image_id: float(_read_line(proc, stderr)) for image_id in ids}  # then the corpus score
            return float(_read_line(proc, stderr)), per_image
        except (OSError, ValueError) as error:
            raise RuntimeError(f"METEOR failed: {error}") from error
        finally:
            watchdog.cancel()
            with contextlib.suppress(OSError):  # the pipe of a process that died may be broken
                proc.stdin.close()
            proc.kill()
            proc.wait()


def meteor_score(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]]) -> float:
    """Corpus METEOR of tokenised captions (:func:`meteor_scores`)."""
    return meteor_scores(predictions, references)[0]


def spice_score(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]]) -> float:
    """Mean SPICE F-score through pycocoevalcap's ``Spice`` (call only when :func:`spice_unavailable` is None)."""
    from pycocoevalcap.spice.spice import Spice

    res = {image_id: [caption] for image_id, caption in predictions.items()}
    gts = {image_id: list(references[image_id]) for image_id in predictions}
    try:
        return float(Spice().compute_score(gts, res)[0])
    except (OSError, subprocess.CalledProcessError, ValueError) as error:
        raise RuntimeError(f"SPICE failed: {error}") from error


def java_metrics(
    predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]], wanted: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """The ``wanted`` Java metrics that can run, and for each one that cannot, the reason.

    Args:
        predictions: raw-text caption per image id (tokenised here with :func:`.scoring.ptb_tokenize`).
        references: raw-text references per image id.
        wanted: names out of :data:`JAVA_METRICS`.

    Returns:
        ``({"meteor": …, "spice": …}, {"<name>": "why it was skipped"})``; a scorer that fails while running is
        skipped with its error as the reason (an evaluation is not lost to a Java problem).
    """
    unknown = sorted(set(wanted) - set(JAVA_METRICS))
    if unknown:
        raise ValueError(f"Unknown Java metric(s) {unknown}; known: {list(JAVA_METRICS)}.")
    predictions = {image_id: ptb_tokenize(caption) for image_id, caption in predictions.items()}
    references = {image_id: [ptb_tokenize(r) for r in references[image_id]] for image_id in predictions}
    scorers = {"meteor": (meteor_unavailable, meteor_score), "spice": (spice_unavailable, spice_score)}
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in JAVA_METRICS:
        if name not in wanted:
            continue
        unavailable, score = scorers[name]
        reason = unavailable()
        if reason is None:
            try:
                values[name] = score(predictions, references)
            except RuntimeError as error:
                reason = str(error)
        if reason is not None:
            skipped[name] = reason
    return values, skipped
