"""``make doctor-eval``: train every fault of the fault library and a randomised healthy sweep, and write the result
tables (fault → finding → evidence; sweep: runs, errors, warnings) into ``docs/doctor.md``.

    python benchmarks/doctor_eval.py                  # everything (~15 min on 2 contended CPU cores)
    python benchmarks/doctor_eval.py --quick          # without the slow faults, a smaller sweep
    python benchmarks/doctor_eval.py --no-write       # print the tables only

Exit status 1 when a fault misses its finding or the sweep exceeds its budget (an error, or more than one warning).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "doctor"))

from fault_table import FAULTS, check_fault, run_training  # noqa: E402
from sweep import healthy_runs, run_healthy  # noqa: E402

DOC = REPO / "docs" / "doctor.md"
START, END = "<!-- doctor-eval:start -->", "<!-- doctor-eval:end -->"


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


def _cell(text: str, limit: int = 260) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate(quick: bool, root: Path) -> tuple[list[str], bool]:
    lines = ["| fault | pack | expected finding | result | evidence shown (start) |", "|---|---|---|---|---|"]
    ok = True
    for fault in FAULTS:
        if quick and fault.slow:
            continue
        started = time.perf_counter()
        outcome = _quiet(run_training, fault.args, root / fault.id)
        problems = check_fault(fault, outcome)
        ok &= not problems
        found = outcome.live.get(fault.expected)
        shown = _cell(found.evidence) if found else ""
        result = "ok" if not problems else "MISSED: " + _cell("; ".join(problems), 160)
        lines.append(f"| {fault.description} (`{fault.id}`) | {fault.pack} | `{fault.expected}` | {result} | {shown} |")
        print(f"{fault.id}: {result} ({time.perf_counter() - started:.0f} s)", flush=True)
    return lines, ok


def sweep(quick: bool, root: Path) -> tuple[list[str], bool]:
    counts = (
        {"regression": 8, "hand_pose": 4}
        if quick
        else {"regression": 20, "hand_pose": 10, "detection3d": 3, "hand_pose_rgbd": 3}
    )
    runs = healthy_runs(counts, seed=2026, two_process=0 if quick else 2)
    errors: list[str] = []
    warnings: list[str] = []
    for run in runs:
        outcome = _quiet(run_healthy, run, root / run.id)
        for finding in outcome.offline:
            (errors if finding.severity == "error" else warnings).append(f"{run.id}: {finding.id}")
        if outcome.status != 0:
            errors.append(f"{run.id}: exit {outcome.status}")
        print(f"{run.id}: {[f.id for f in outcome.offline] or 'no findings'}", flush=True)
    per_pack = {pack: sum(r.pack == pack for r in runs) for pack in counts}
    two = sum(r.processes == 2 for r in runs)
    lines = [
        "| runs | of which | errors | warnings |",
        "|---|---|---|---|",
        f"| {len(runs)} | {', '.join(f'{n} {p}' for p, n in per_pack.items())}"
        f"{f' ({two} on 2 processes)' if two else ''} | {len(errors)} | {len(warnings)} |",
    ]
    for item in errors + warnings:
        lines.append(f"\n- {item}")
    return lines, not errors and len(warnings) <= 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slow faults; a smaller healthy sweep")
    parser.add_argument("--no-write", action="store_true", help="print the tables; leave docs/doctor.md alone")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="doctor_eval_") as tmp:
        fault_lines, faults_ok = evaluate(args.quick, Path(tmp) / "faults")
        sweep_lines, sweep_ok = sweep(args.quick, Path(tmp) / "healthy")
    minutes = (time.perf_counter() - started) / 60
    block = [
        START,
        f"Produced by `make doctor-eval` (`benchmarks/doctor_eval.py{' --quick' if args.quick else ''}`) in "
        f"{minutes:.0f} min on {os.cpu_count()} CPU cores; every run is a real `trainwell train`, and a fault counts "
        "only if the run raised exactly its finding — live and in `trainwell doctor RUN_DIR` — with the expected "
        "exit status.",
        "",
        "**Faults**",
        "",
        *fault_lines,
        "",
        "**Healthy sweep** (hyperparameters drawn at random: LR within ×3 of the tuned one, batch size, seed, "
        "warmup, schedule, weight decay, clipping, accumulation, width; `tests/doctor/sweep.py`)",
        "",
        *sweep_lines,
        END,
    ]
    text = "\n".join(block)
    print(text)
    if not args.no_write:
        doc = DOC.read_text(encoding="utf-8")
        if START in doc and END in doc:
            doc = doc[: doc.index(START)] + text + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n## Evaluation: planted faults and a healthy sweep\n\n" + text + "\n"
        DOC.write_text(doc, encoding="utf-8")
    return 0 if faults_ok and sweep_ok else 1


if __name__ == "__main__":
    sys.exit(main())
