"""GPU readiness check: AMP, no per-step host syncs, speed vs a hand-written loop, bitwise resume, CUDA eval.

One script for a lent NVIDIA machine (budget: ≤ 6 minutes on one H200 for every pack present). For each task
pack whose config exists it

1. trains a short run with ``train.amp=bf16`` and with ``fp16`` (GradScaler) and counts the host-device
   syncs of every step outside logging steps (``torch.cuda.set_sync_debug_mode("warn")`` inside a window of
   steps that holds no logging step, evaluation or checkpoint; each sync is recorded with its Python call
   site), and reports steps/s and peak memory;
2. measures trainwell's steps/s against a hand-written loop of the same model, data, optimizer and
   precision (``benchmarks/gpu_check_runs.py``: pinned memory, ``non_blocking`` copies, fused AdamW),
   alternating runs in one process, the median of back-to-back ratios;
3. kills a run mid-epoch (a child that SIGKILLs itself when step k starts, k = 1.5 epochs), resumes it with
   ``trainwell train ... --resume auto`` and checks the final weights (and optimizer, GradScaler and
   scheduler state) bitwise equal to
   an uninterrupted run's, CUDA RNG state included (dropout is on where the pack has a key for it);
4. runs ``trainwell eval`` of that checkpoint on the device and on the CPU and checks the metrics agree
   within ``rtol = 1e-3`` (fp32 on both; TF32 convolutions are cuDNN's default) plus ``atol = 1e-6``;

then prints one table and writes it as JSON (``--out``). Exit status 0 when every check passes, 1 otherwise.

Setting up on the device machine (no internet there): use the CUDA build of PyTorch that is preinstalled
(``python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"``)
and run trainwell from the source tree, no install needed::

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json            # every pack present
    PYTHONPATH=src python benchmarks/gpu_check.py --quick --packs regression       # ~1 minute
    PYTHONPATH=src python benchmarks/gpu_check.py --set train.compile=true          # the same, compiled

trainwell's other dependencies (numpy, omegaconf, PyYAML, tqdm, tensorboard, matplotlib) must be importable
too. Where no CUDA torch is installed and a network is, e.g.
``pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128`` (the repository's
``make setup`` installs the CPU build). ``--device cpu`` runs everything except the sync count on a CPU:
that is how the script itself is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS_SCRIPT = Path(__file__).resolve().parent / "gpu_check_runs.py"
EVAL_RTOL, EVAL_ATOL = 1e-3, 1e-6
MIN_RATIO = 0.98
CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Pack:
    """A task pack to check: its config and the overrides that make its runs short."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    quick_overrides: tuple[str, ...] = ()
    resume_overrides: tuple[str, ...] = ()
    """Extra keys for the kill/resume runs, e.g. dropout on, so that the RNG state matters."""


PACKS: tuple[Pack, ...] = (
    Pack(
        "regression",
        "configs/examples/regression.yaml",
        overrides=("data.train_size=8192", "train.batch_size=64"),
        quick_overrides=("data.train_size=512", "train.batch_size=32", "data.val_size=64"),
        resume_overrides=("task.dropout=0.1", "data.train_size=512", "train.batch_size=32"),
    ),
    Pack(
        "hand_pose_lifting",
        "configs/hand_pose/synthetic_lifting.yaml",
        overrides=("data.train_size=16384", "data.val_size=1024", "train.batch_size=256"),
        quick_overrides=("data.train_size=2048", "data.val_size=256", "train.batch_size=128", "task.model.hidden=128"),
        resume_overrides=(
            *("data.train_size=2048", "data.val_size=256", "train.batch_size=128", "task.model.dropout=0.1"),
        ),
    ),
    Pack("hand_pose_rgbd", "configs/hand_pose/rgbd_tiny.yaml"),
    Pack("captioning", "configs/captioning/tiny.yaml"),
    Pack("detection3d", "configs/detection3d/tiny.yaml"),
)


@dataclass
class PackResult:
    """Everything measured for one pack (JSON-serialisable)."""

    name: str
    config: str
    measure: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


# -- subprocesses -----------------------------------------------------------------------------------
def _run(cmd: Sequence[str], log: Path, timeout_s: float = CHILD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a child from the repository root, its output appended to ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(list(cmd), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n\n")
    return proc


def _failed(proc: subprocess.CompletedProcess[str], what: str) -> str:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return f"{what} exited with {proc.returncode}: {' | '.join(tail)}"


# -- checks -----------------------------------------------------------------------------------------
def tensors_equal(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two nested checkpoint structures differ (tensors compared bitwise, dtype and shape too)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
        return [] if same else [path or "<root>"]
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return [f"{path}{{keys}}"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{path}.{k}" if path else str(k))]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}[len]"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in tensors_equal(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "<root>"]


def compare_metrics(device_metrics: Mapping[str, float], cpu_metrics: Mapping[str, float]) -> dict[str, Any]:
    """Per metric ``|d - c| <= atol + rtol |c|``; the largest relative difference and whether all pass."""
    if set(device_metrics) != set(cpu_metrics):
        return {"ok": False, "error": f"metric names differ: {sorted(device_metrics)} vs {sorted(cpu_metrics)}"}
    worst, failing = 0.0, []
    for name, c in cpu_metrics.items():
        d = device_metrics[name]
        diff = abs(d - c)
        worst = max(worst, diff / max(abs(c), 1e-12))
        if not diff <= EVAL_ATOL + EVAL_RTOL * abs(c):
            failing.append(name)
    return {"ok": not failing, "max_rel_diff": worst, "failing": failing, "rtol": EVAL_RTOL, "atol": EVAL_ATOL}


def check_resume(pack: Pack, keys: list[str], work: Path, log: Path) -> dict[str, Any]:
    """Uninterrupted run vs a run SIGKILLed mid-epoch and resumed: final checkpoints bitwise equal."""
    py = sys.executable
    full, broken = work / "uninterrupted", work / "killed"
    proc = _run([py, "-m", "trainwell", "train", pack.config, *keys, f"run.dir={full}"], log)
    if proc.returncode != 0:
        return {"ok": False, "error": _failed(proc, "the uninterrupted run")}
    proc = _run([py, str(RUNS_SCRIPT), "killed", pack.config, *keys, f"run.dir={broken}"], log)
    if proc.returncode != -9:
        return {"ok": False, "error": _failed(proc, "the run meant to die by SIGKILL")}
    killed_at = next((line for line in proc.stdout.splitlines() if "SIGKILLs itself" in line), "")
    proc = _run([py, "-m", "trainwell", "train", pack.config, *keys, f"run.dir={broken}", "--resume", "auto"], log)
    if proc.returncode != 0:
        return {"ok": False, "error": _failed(proc, "the resumed run")}
    a = torch.load(full / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(broken / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    model_diff = tensors_equal(a["model"], b["model"])
    # The rest of the training state must continue identically too (absent parts compare equal).
    state_diff = [
        d for part in ("optimizer", "scaler", "scheduler") for d in tensors_equal(a.get(part), b.get(part), part)
    ]
    return {
        "ok": not model_diff and not state_diff,
        "killed": killed_at,
        "model_differs_at": model_diff[:5],
        "state_differs_at": state_diff[:5],
        "checkpoint": str(full / "checkpoints" / "last.pt"),
    }


def check_eval(pack: Pack, keys: list[str], checkpoint: str, device: str, work: Path, log: Path) -> dict[str, Any]:
    """``trainwell eval`` of one checkpoint on ``device`` and on the CPU, fp32 both."""
    metrics = {}
    for where in dict.fromkeys((device, "cpu")):
        out = work / f"eval_{where}.json"
        cmd = [sys.executable, "-m", "trainwell", "eval", pack.config, "--checkpoint", checkpoint, "--out", str(out)]
        proc = _run([*cmd, *keys, f"train.device={where}", "train.amp=off"], log)
        if proc.returncode != 0:
            return {"ok": False, "error": _failed(proc, f"trainwell eval on {where}")}
        metrics[where] = json.loads(out.read_text(encoding="utf-8"))["metrics"]
    return {**compare_metrics(metrics[device], metrics["cpu"]), "metrics": metrics}


def check_pack(pack: Pack, args: argparse.Namespace, work: Path, log: Path) -> PackResult:
    """All four checks of one pack; a failing step is recorded and the next one still runs."""
    result = PackResult(pack.name, pack.config)
    base = [*pack.overrides, *(pack.quick_overrides if args.quick else ()), *args.set]
    out = work / "measure.json"
    measure_cmd = [sys.executable, str(RUNS_SCRIPT), "measure", pack.config, *base, "--device", args.device]
    measure_cmd += ["--amp", *args.amp, "--steps", str(args.steps), "--repeats", str(args.repeats), "--out", str(out)]
    proc = _run(measure_cmd, log)
    if proc.returncode == 0:
        result.measure = json.loads(out.read_text(encoding="utf-8"))
    else:
        result.errors.append(_failed(proc, "measure"))
    resume_amp = "fp16" if args.device.startswith("cuda") else "bf16"  # fp16: the GradScaler state resumes too
    keys = [*pack.overrides, *pack.resume_overrides, *args.set, "train.epochs=2", "train.max_steps=null"]
    keys += ["checkpoint.latest_every_steps=1", "checkpoint.every_epochs=0", "eval.every_epochs=0"]
    keys += ["train.progress_bar=off", "train.log_every=5", f"train.amp={resume_amp}", f"train.device={args.device}"]
    result.resume = check_resume(pack, keys, work, log)
    if result.resume.get("checkpoint"):
        result.eval = check_eval(pack, keys, result.resume["checkpoint"], args.device, work, log)
    return result


# -- report -----------------------------------------------------------------------------------------
COLUMNS = (
    ("pack", 18),
    ("amp", 5),
    ("steps/s", 9),
    ("hand steps/s", 12),
    ("ratio", 6),
    ("peak MiB", 9),
    ("syncs/steps", 11),
    ("resume", 8),
    ("eval rel diff", 13),
)


def build_rows(results: Sequence[PackResult], device: str) -> list[dict[str, Any]]:
    """One row per (pack, precision) with each check's verdict (``ok``: every check of the row passed)."""
    rows = []
    for r in results:
        amps = (r.measure or {}).get("amp") or {"-": None}
        for amp, m in amps.items():
            sync = (m or {}).get("sync_check") or {}
            syncs_ok = sync.get("syncs", 0) == 0 if device.startswith("cuda") else None
            ratio = (m or {}).get("ratio")
            row = {
                "pack": r.name,
                "amp": amp,
                "steps_per_s": (m or {}).get("steps_per_s"),
                "hand_steps_per_s": (m or {}).get("hand_steps_per_s"),
                "ratio": ratio,
                "peak_memory_mib": (m or {}).get("peak_memory_mib"),
                "syncs": sync.get("syncs") if device.startswith("cuda") else None,
                "window_steps": sync.get("steps"),
                "sync_sites": sync.get("sync_sites", []),
                "resume_bitwise": (r.resume or {}).get("ok"),
                "eval_max_rel_diff": (r.eval or {}).get("max_rel_diff"),
                "eval_ok": (r.eval or {}).get("ok"),
                "errors": list(r.errors) + [x["error"] for x in (r.resume, r.eval) if x and "error" in x],
            }
            checks = [ratio is not None and ratio >= MIN_RATIO, row["resume_bitwise"] is True, row["eval_ok"] is True]
            row["ok"] = m is not None and all(checks) and syncs_ok is not False and not row["errors"]
            rows.append(row)
    return rows


def _cell(value: Any, fmt: str = "{:.1f}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "ok" if value else "FAIL"
    return fmt.format(value) if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a fixed-width text table, errors and sync sites listed below it."""
    lines = [" ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append(" ".join("-" * width for _, width in COLUMNS))
    notes = []
    for row in rows:
        syncs = "n/a" if row["syncs"] is None else f"{row['syncs']}/{row['window_steps']}"
        cells = (
            row["pack"],
            row["amp"],
            _cell(row["steps_per_s"]),
            _cell(row["hand_steps_per_s"]),
            _cell(row["ratio"], "{:.3f}"),
            _cell(row["peak_memory_mib"]),
            syncs,
            _cell(row["resume_bitwise"]),
            _cell(row["eval_max_rel_diff"], "{:.1e}"),
        )
        lines.append(" ".join(str(c).ljust(width) for c, (_, width) in zip(cells, COLUMNS, strict=True)))
        notes += [f"  {row['pack']} {row['amp']}: sync at {site}" for site in row["sync_sites"]]
        notes += [f"  {row['pack']}: {err}" for err in row["errors"]]
    return "\n".join(lines + sorted(set(notes), key=notes.index))


def machine_info(device: str) -> dict[str, Any]:
    """Where the figures come from."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON (NaN as null)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, Mapping):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    Path(path).write_text(json.dumps(clean(payload), indent=2) + "\n", encoding="utf-8")


# -- main -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shortens every run, ``--packs`` selects packs by name."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: no sync count; for testing)")
    parser.add_argument("--quick", action="store_true", help="small data, few steps, one speed pair")
    parser.add_argument("--packs", default="all", help=f"comma-separated, from: {', '.join(p.name for p in PACKS)}")
    parser.add_argument("--amp", nargs="+", default=["bf16", "fp16"], choices=["off", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=None, help="steps per measured run (default 60, quick 20)")
    parser.add_argument("--repeats", type=int, default=None, help="speed pairs per precision (default 3, quick 1)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra config overrides for every run, e.g. train.compile=true data.num_workers=4",
    )
    parser.add_argument("--out", default=None, help="write the table and all details as JSON here")
    parser.add_argument("--work-dir", default=None, help="keep run directories and child logs here")
    args = parser.parse_args(argv)
    names = {p.name for p in PACKS}
    chosen = names if args.packs == "all" else {n.strip() for n in args.packs.split(",") if n.strip()}
    unknown = sorted(chosen - names)
    if unknown:
        parser.error(f"unknown pack(s) {unknown}; choose from {sorted(names)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device; see the header")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device must be cpu, cuda or cuda:N, not {args.device!r}")
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        parser.error(f"--set takes KEY=VALUE overrides, got {bad}")
    args.pack_names = [p.name for p in PACKS if p.name in chosen]
    args.steps = args.steps or (20 if args.quick else 60)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    work_root = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    work_root.mkdir(parents=True, exist_ok=True)
    log = work_root / "children.log"
    results = []
    for pack in (p for p in PACKS if p.name in args.pack_names):
        if not (ROOT / pack.config).is_file():
            print(f"gpu_check: skipping {pack.name}: {pack.config} does not exist in this checkout", flush=True)
            continue
        print(f"gpu_check: {pack.name} ({pack.config}) …", flush=True)
        work = work_root / pack.name
        work.mkdir(exist_ok=True)
        results.append(check_pack(pack, args, work, log))
    rows = build_rows(results, args.device)
    print(format_table(rows))
    elapsed = time.perf_counter() - started
    ok = bool(rows) and all(r["ok"] for r in rows)
    print(f"gpu_check: {'all checks passed' if ok else 'some checks FAILED'} in {elapsed:.0f} s; logs: {log}")
    if args.out:
        payload = {
            "machine": machine_info(args.device),
            "args": {k: v for k, v in vars(args).items()},
            "seconds": elapsed,
            "ok": ok,
            "rows": rows,
            "packs": [vars(r) for r in results],
        }
        write_json(args.out, payload)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
