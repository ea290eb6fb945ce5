"""The healthy sweep: runs with hyperparameters drawn at random from sane ranges, on which the doctor must stay
silent (no error; at most one warning over the whole sweep).

"Sane" means what a careful user would try around the tuned settings: the learning rate within ×3 of the tuned one
(log-uniform), batch sizes, seeds, warmup lengths, decay schedules, weight decay, clipping, accumulation, logging
intervals, model widths. Adding a pack: add a ``draw_<pack>`` function and its entry in :data:`DRAWS`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fault_table import DETECTION, HAND_POSE, HAND_POSE_LR, REGRESSION, REGRESSION_LR, RGBD, Outcome, run_training


@dataclass(frozen=True)
class HealthyRun:
    """One drawn configuration."""

    id: str
    pack: str
    args: tuple[str, ...]
    processes: int = 1


def _lr(rng: random.Random, tuned: float) -> float:
    return float(f"{tuned * 3 ** rng.uniform(-1.0, 1.0):.3g}")  # log-uniform within ×3 of the tuned value


def draw_regression(rng: random.Random) -> tuple[str, ...]:
    """The regression example with every training hyperparameter drawn (in a fixed order: the same seed draws the
    same runs); the warmup is capped at the run's steps, which trainwell refuses to exceed."""
    lr, name, decay = _lr(rng, REGRESSION_LR), rng.choice(["adamw", "adam"]), rng.choice([0.0, 1e-4, 1e-2])
    batch, accum, epochs = rng.choice([16, 32, 64]), rng.choice([1, 1, 2]), rng.choice([2, 3, 5])
    seed, log_every, clip = rng.randrange(1000), rng.choice([1, 2, 5]), rng.choice(["null", 1.0, 5.0])
    batches_per_epoch = math.ceil(512 / batch)  # the example's 512 training samples
    total_steps = math.ceil(batches_per_epoch / accum) * epochs
    warmup = min(rng.choice([0, 5, 20]), total_steps)
    return (
        *REGRESSION,
        f"optim.lr={lr}",
        f"optim.name={name}",
        f"optim.weight_decay={decay}",
        f"train.batch_size={batch}",
        f"train.grad_accum_steps={accum}",
        f"train.epochs={epochs}",
        f"train.seed={seed}",
        f"train.log_every={log_every}",
        f"train.clip_grad_norm={clip}",
        f"schedule.warmup_steps={warmup}",
        f"schedule.decay={rng.choice(['linear', 'cosine', 'constant'])}",
        f"task.hidden={rng.choice([32, 64, 128])}",
        f"task.dropout={rng.choice([0.0, 0.1])}",
        f"data.seed={rng.randrange(100)}",
    )


def draw_hand_pose(rng: random.Random) -> tuple[str, ...]:
    """The small hand-pose run of the fault library with its training hyperparameters drawn."""
    return (
        *HAND_POSE,
        f"optim.lr={_lr(rng, HAND_POSE_LR)}",
        f"optim.weight_decay={rng.choice([1e-4, 1e-2])}",
        f"train.batch_size={rng.choice([32, 64])}",
        f"train.epochs={rng.choice([3, 4])}",
        f"train.seed={rng.randrange(1000)}",
        f"train.log_every={rng.choice([1, 2, 4])}",
        f"schedule.warmup_steps={rng.choice([0, 5, 10])}",
        f"schedule.decay={rng.choice(['linear', 'cosine', 'constant'])}",
        f"task.model.hidden={rng.choice([64, 128])}",
        f"data.seed={rng.randrange(100)}",
    )


def draw_detection3d(rng: random.Random) -> tuple[str, ...]:
    """The tiny 3D-detection run (one-cycle schedule) with its LR, seeds and batch size drawn."""
    return (
        *DETECTION,
        f"optim.lr={_lr(rng, 3e-3)}",
        f"train.batch_size={rng.choice([2, 4])}",
        f"train.seed={rng.randrange(1000)}",
        f"data.seed={rng.randrange(100)}",
    )


def draw_hand_pose_rgbd(rng: random.Random) -> tuple[str, ...]:
    """The tiny RGB-D hand-pose run with its LR, seeds and warmup drawn."""
    return (
        *RGBD,
        f"optim.lr={_lr(rng, 3e-3)}",
        f"train.seed={rng.randrange(1000)}",
        f"schedule.warmup_steps={rng.choice([0, 2, 5])}",
        f"data.seed={rng.randrange(100)}",
    )


DRAWS: dict[str, Callable[[random.Random], tuple[str, ...]]] = {
    "regression": draw_regression,
    "hand_pose": draw_hand_pose,
    "detection3d": draw_detection3d,
    "hand_pose_rgbd": draw_hand_pose_rgbd,
}
"""Captioning is not drawn: its tiny config is not silent even as tuned (its evaluator warns of empty and constant
captions after 3 epochs), so it has no healthy baseline to perturb yet."""


def healthy_runs(counts: dict[str, int], *, seed: int = 0, two_process: int = 0) -> list[HealthyRun]:
    """``counts[pack]`` drawn runs per pack (reproducible from ``seed``), plus ``two_process`` regression runs on
    2 gloo processes."""
    rng = random.Random(seed)
    runs = [HealthyRun(f"{pack}-{i:02d}", pack, DRAWS[pack](rng)) for pack, n in counts.items() for i in range(n)]
    for i in range(two_process):
        # train.batch_size is per process: halve the drawn one, so that the global batch (and with it the number
        # of optimizer steps) is the one drawn from the sane range, as for a single process.
        args = tuple(
            f"train.batch_size={int(a.split('=')[1]) // 2}" if a.startswith("train.batch_size=") else a
            for a in draw_regression(rng)
        )
        runs.append(HealthyRun(f"regression-2proc-{i}", "regression", (*args, "train.device=cpu"), 2))
    return runs


def _train_rank(rank: int, world_size: int, args: tuple[str, ...], run_dir: Path) -> None:
    from trainwell.cli import main

    status = main(["train", *args, f"run.dir={run_dir}", "train.progress_bar=off"])
    if status != 0:
        raise RuntimeError(f"rank {rank}: trainwell train exited {status}")


def run_healthy(run: HealthyRun, run_dir: Path) -> Outcome:
    """Train one drawn run (in this process, or on 2 spawned gloo processes) and read the doctor's findings."""
    if run.processes == 1:
        return run_training(run.args, run_dir)
    import contextlib
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
    from distributed_helpers import spawn

    from trainwell.cli import main
    from trainwell.doctor.findings import FINDINGS_FILE, read_findings
    from trainwell.doctor.offline import diagnose_run

    spawn(_train_rank, run.processes, run.args, run_dir, init_group=False)
    with contextlib.redirect_stdout(io.StringIO()):
        doctor_exit = main(["doctor", str(run_dir)])
    return Outcome(0, read_findings(run_dir / FINDINGS_FILE), diagnose_run(run_dir).findings, doctor_exit)
