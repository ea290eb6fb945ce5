"""The fault library: one table of planted mistakes — id, pack, config (+ overrides or a task subclass), the one
finding it must raise — and the runner that trains each and reads back what the doctor said.

Adding a pack's faults (captioning, 3D detection, RGB-D hand pose): append :class:`Fault` rows with that pack's
tiny config as ``base`` and its fault tasks in a module on :data:`FAULT_DIRS`; nothing else changes. Used by
``tests/doctor/test_fault_library.py`` (a subset, small sizes) and ``benchmarks/doctor_eval.py`` (all of them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
FAULT_DIRS = (Path(__file__).resolve().parent, REPO / "tests" / "integration")
"""Where the fault tasks live (``doctor_faults``, ``fault_tasks``): put on ``sys.path`` by :func:`run_training`."""


def _yaml(path: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / path).read_text())


REGRESSION = ("configs/examples/regression.yaml",)
_REG = _yaml(REGRESSION[0])
REGRESSION_LR = float(_REG["optim"]["lr"])  # "3e-3" is a YAML 1.1 string for PyYAML
REGRESSION_L1 = float(_REG["task"]["loss_weights"]["l1"])
# 48 optimizer steps (3 epochs × 16): log_every 16 gives 3 log lines, 4 epochs at log_every 2 give 32.
REGRESSION_SHORT = (*REGRESSION, "train.log_every=16")
REGRESSION_LONG = (*REGRESSION, "train.epochs=4", "train.log_every=2")

# A few-second hand-pose run (32 steps, 16 log lines): every key the doctor's rules depend on is pinned here.
HAND_POSE = (
    "configs/hand_pose/tiny.yaml",
    "data.train_size=512",
    "data.val_size=128",
    "task.model.hidden=64",
    "train.batch_size=64",
    "train.epochs=4",
    "train.log_every=2",
    "optim.lr=3e-3",
    "schedule.warmup_steps=10",
)
HAND_POSE_LR = 3e-3
HAND_POSE_SHORT = (*HAND_POSE, "train.epochs=3", "train.log_every=8")  # 24 steps, 3 log lines
HAND_POSE_LONG = (*HAND_POSE, "train.epochs=8", "train.log_every=2")  # 64 steps, 32 log lines
RGBD = ("configs/hand_pose/rgbd_tiny.yaml",)  # tuned: AdamW lr 3e-3, weight decay 1e-4
CAPTIONING = ("configs/captioning/tiny.yaml",)  # tuned: AdamW lr 2e-3, no weight decay
DETECTION = ("configs/detection3d/tiny.yaml",)  # tuned: AdamW lr 3e-3, weight decay 0.01, one-cycle
TINY_HAND_POSE = ("configs/hand_pose/tiny.yaml", "train.epochs=3")  # the headline case (slow: ~1 min)
TINY_HAND_POSE_LR = float(_yaml("configs/hand_pose/tiny.yaml")["optim"]["lr"])


@dataclass(frozen=True)
class Fault:
    """One planted mistake: train ``args`` and expect exactly the finding ``expected``."""

    id: str
    pack: str
    description: str
    args: tuple[str, ...]
    expected: str
    exit_status: int = 0
    evidence: tuple[str, ...] = ()
    """Substrings the expected finding's evidence (or title) must contain: the numbers that name the cause."""
    slow: bool = False
    """Only in ``make doctor-eval`` (not in the test suite)."""


def _task(module_class: str) -> str:
    return f"task.class_path={module_class}"


FAULTS: list[Fault] = [
    # -- learning rate, short (3 log lines) and longer (~30 log lines) runs ---------------------------------
    Fault("reg-lr-x100-short", "regression", "LR ×100, 3 log lines",
          (*REGRESSION_SHORT, f"optim.lr={REGRESSION_LR * 100}"), "optim.large_updates", evidence=("learning rate",)),
    Fault("reg-lr-x100-long", "regression", "LR ×100, 24 log lines",
          (*REGRESSION_LONG, f"optim.lr={REGRESSION_LR * 100}"), "optim.large_updates", evidence=("learning rate",)),
    Fault("reg-lr-x1000-short", "regression", "LR ×1000, 3 log lines",
          (*REGRESSION_SHORT, f"optim.lr={REGRESSION_LR * 1000}"), "loss.diverged", evidence=("learning rate",)),
    Fault("reg-lr-x1000-long", "regression", "LR ×1000, 32 log lines",
          (*REGRESSION_LONG, f"optim.lr={REGRESSION_LR * 1000}"), "loss.diverged", evidence=("learning rate",)),
    Fault("reg-lr-x1e-4-short", "regression", "LR ×1e-4, 3 log lines",
          (*REGRESSION_SHORT, f"optim.lr={REGRESSION_LR * 1e-4}"), "optim.lr_too_low", evidence=("learning rate",)),
    Fault("reg-lr-x1e-4-long", "regression", "LR ×1e-4, 32 log lines",
          (*REGRESSION_LONG, f"optim.lr={REGRESSION_LR * 1e-4}"), "optim.lr_too_low", evidence=("learning rate",)),
    Fault("hand-lr-x1000-short", "hand_pose", "LR ×1000, 3 log lines",
          (*HAND_POSE_SHORT, f"optim.lr={HAND_POSE_LR * 1000}"), "loss.diverged", evidence=("learning rate",)),
    Fault("hand-lr-x100-long", "hand_pose", "LR ×100, 32 log lines",
          (*HAND_POSE_LONG, f"optim.lr={HAND_POSE_LR * 100}"), "optim.large_updates", evidence=("learning rate",)),
    Fault("hand-lr-x1e-4-short", "hand_pose", "LR ×1e-4, 3 log lines",
          (*HAND_POSE_SHORT, f"optim.lr={HAND_POSE_LR * 1e-4}"), "optim.lr_too_low", evidence=("learning rate",)),
    Fault("tiny-hand-lr-x1000", "hand_pose", "tiny.yaml, LR ×1000, 3 epochs (the issue's case)",
          (*TINY_HAND_POSE, f"optim.lr={TINY_HAND_POSE_LR * 1000}"), "loss.diverged", evidence=("learning rate",),
          slow=True),
    Fault("tiny-hand-lr-x1e-6", "hand_pose", "tiny.yaml, LR ×1e-6, 3 epochs (the issue's case)",
          (*TINY_HAND_POSE, f"optim.lr={TINY_HAND_POSE_LR * 1e-6}"), "optim.lr_too_low",
          evidence=("learning rate",), slow=True),
    # -- data --------------------------------------------------------------------------------------------------
    Fault("hand-metres", "hand_pose", "3D targets in metres",
          (*HAND_POSE, _task("fault_tasks:MetresHandPoseTask")), "hand_pose.units_not_mm", evidence=("metres",)),
    Fault("hand-not-root-centred", "hand_pose", "targets centred on the centroid, not the wrist",
          (*HAND_POSE, _task("fault_tasks:CentroidCentredHandPoseTask")), "hand_pose.not_root_centred"),
    Fault("hand-joint-order", "hand_pose", "joints in MANO/HO3D order, pack expects OpenPose",
          (*HAND_POSE, _task("doctor_faults:MANOOrderHandPoseTask")), "hand_pose.joint_order"),
    Fault("hand-mirrored", "hand_pose", "left/right mirrored 3D labels",
          (*HAND_POSE, _task("doctor_faults:MirroredHandPoseTask")), "hand_pose.labels_mirrored"),
    Fault("hand-shuffled-labels", "hand_pose", "3D labels shuffled against the 2D inputs",
          (*HAND_POSE, _task("doctor_faults:ShuffledLabelsHandPoseTask")), "hand_pose.labels_mismatch"),
    Fault("hand-augment-input-only", "hand_pose", "rotation augmentation on the 2D input, not the 3D label",
          (*HAND_POSE, _task("doctor_faults:RotatedInputHandPoseTask")), "hand_pose.inputs_transformed"),
    Fault("reg-shuffled-labels", "regression", "targets permuted against the inputs",
          (*REGRESSION_LONG, _task("doctor_faults:ShuffledLabelsRegressionTask")), "loss.not_decreasing",
          evidence=("weights move normally",)),
    Fault("reg-nan-sample", "regression", f"NaN in one input sample (index {300})",
          (*REGRESSION, _task("doctor_faults:NaNSampleRegressionTask")), "train.nonfinite", exit_status=1,
          evidence=("'x' at dataset indices [300]",)),
    # -- losses ------------------------------------------------------------------------------------------------
    Fault("reg-loss-weight-1e4", "regression", "a loss term weighted 1e4×",
          (*REGRESSION, f"task.loss_weights.l1={REGRESSION_L1 * 1e4}"), "loss.component_dominates"),
    Fault("hand-loss-weight-1e4", "hand_pose", "joint_3d weighted 1e4×",
          (*HAND_POSE, "task.loss_weights.joint_3d=1e4"), "loss.component_dominates"),
    Fault("reg-nan-loss-step-7", "regression", "NaN loss on micro-batch 7",
          (*REGRESSION, _task("fault_tasks:NaNRegressionTask")), "train.nonfinite", exit_status=1,
          evidence=("every input tensor of that batch is finite",)),
    Fault("reg-nan-loss-skipped", "regression", "NaN loss on micro-batch 7 under nonfinite=skip",
          (*REGRESSION, _task("fault_tasks:NaNRegressionTask"), "diagnostics.nonfinite=skip"),
          "train.nonfinite_skipped"),
    # -- model and optimizer -----------------------------------------------------------------------------------
    Fault("reg-eval-mode", "regression", "model.eval() inside compute_losses",
          (*REGRESSION, _task("fault_tasks:EvalModeRegressionTask")), "model.eval_mode"),
    Fault("hand-eval-mode", "hand_pose", "model.eval() inside compute_losses (BatchNorm)",
          (*HAND_POSE, _task("doctor_faults:EvalModeHandPoseTask")), "model.eval_mode"),
    Fault("reg-frozen", "regression", "requires_grad off for all but the head",
          (*REGRESSION, _task("doctor_faults:FrozenRegressionTask")), "model.frozen_parameters"),
    Fault("reg-weight-decay-10", "regression", "weight decay 10 instead of 1e-4",
          (*REGRESSION, "optim.weight_decay=10"), "optim.weight_decay_strong"),
    Fault("hand-weight-decay-10", "hand_pose", "weight decay 10 instead of 1e-4",
          (*HAND_POSE, "optim.weight_decay=10"), "optim.weight_decay_strong"),
    # -- evaluation and pipeline -------------------------------------------------------------------------------
    Fault("reg-stale-eval", "regression", "evaluation on a stale model copy",
          (*REGRESSION, _task("fault_tasks:StaleEvalRegressionTask")), "val.stuck"),
    Fault("hand-stale-eval", "hand_pose", "evaluation on a stale model copy",
          (*HAND_POSE, _task("doctor_faults:StaleEvalHandPoseTask")), "val.stuck"),
    Fault("reg-slow-data", "regression", "300 ms per batch in the training process",
          (*REGRESSION, "data.train_size=192", "train.log_every=1", _task("fault_tasks:SlowDataRegressionTask")),
          "data.input_bound"),
    # -- the packs (RGB-D hand pose, captioning, 3D detection): configuration faults, and data faults written the way
    # a port gets them wrong (the packs' check_batch rules; the symptoms they cause fold into them).
    Fault("cap-padding-in-loss", "captioning", "padding labelled with the pad id, not the ignore index",
          (*CAPTIONING, _task("doctor_faults:PaddingInLossCaptioningTask")), "captioning.padding_in_loss",
          evidence=("padded positions",)),
    Fault("cap-labels-not-shifted", "captioning", "labels not shifted one token against the inputs",
          (*CAPTIONING, _task("doctor_faults:UnshiftedLabelsCaptioningTask")), "captioning.labels_not_shifted"),
    Fault("det-camera-heading", "detection3d", "training headings 90° off (camera rotation_y kept)",
          (*DETECTION, _task("doctor_faults:CameraHeadingDetectionTask")), "detection3d.heading_convention"),
    Fault("rgbd-depth-metres", "hand_pose_rgbd", "depth maps in metres",
          (*RGBD, _task("doctor_faults:DepthInMetresRGBDTask")), "hand_pose.depth_not_mm"),
    Fault("rgbd-rgb-255", "hand_pose_rgbd", "RGB in 0…255, not [0, 1]",
          (*RGBD, _task("doctor_faults:RGB255RGBDTask")), "hand_pose.rgb_range"),
    Fault("cap-lr-x1000", "captioning", "LR ×1000", (*CAPTIONING, "optim.lr=2.0"), "loss.diverged",
          evidence=("learning rate",)),
    Fault("cap-lr-x1e-4", "captioning", "LR ×1e-4", (*CAPTIONING, "optim.lr=2e-7"), "optim.lr_too_low",
          evidence=("learning rate",)),
    Fault("cap-weight-decay-10", "captioning", "weight decay 10", (*CAPTIONING, "optim.weight_decay=10"),
          "optim.weight_decay_strong"),
    Fault("rgbd-lr-x1000", "hand_pose_rgbd", "LR ×1000",
          (*RGBD, "optim.lr=3.0"), "loss.diverged", evidence=("learning rate",)),
    Fault("rgbd-lr-x1e-4", "hand_pose_rgbd", "LR ×1e-4", (*RGBD, "optim.lr=3e-7"), "optim.lr_too_low",
          evidence=("learning rate",)),
    Fault("rgbd-weight-decay-10", "hand_pose_rgbd", "weight decay 10 instead of 1e-4",
          (*RGBD, "optim.weight_decay=10"), "optim.weight_decay_strong"),
    Fault("det-lr-x1000", "detection3d", "LR ×1000", (*DETECTION, "optim.lr=3.0"), "loss.diverged",
          evidence=("learning rate",)),
    Fault("det-lr-x1e-4", "detection3d", "LR ×1e-4", (*DETECTION, "optim.lr=3e-7"), "optim.lr_too_low",
          evidence=("learning rate",)),
    Fault("det-weight-decay-10", "detection3d", "weight decay 10 instead of 0.01",
          (*DETECTION, "optim.weight_decay=10"), "optim.weight_decay_strong"),
]  # fmt: skip


@dataclass
class Outcome:
    """What one run produced: its exit status and the doctor's findings (live file and offline diagnosis)."""

    status: int
    live: dict[str, Any] = field(default_factory=dict)
    """``{id: Finding}`` the run wrote (symptoms folded into their causes removed)."""
    offline: list[Any] = field(default_factory=list)
    """``trainwell doctor RUN_DIR``'s findings."""
    doctor_exit: int = 0


def run_training(args: tuple[str, ...] | list[str], run_dir: Path) -> Outcome:
    """Train ``args`` in this process through ``trainwell.cli.main``, then read what the doctor found."""
    import contextlib
    import io

    from trainwell.cli import main
    from trainwell.doctor.findings import FINDINGS_FILE, read_findings
    from trainwell.doctor.offline import diagnose_run

    for path in FAULT_DIRS:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    status = main(["train", *args, f"run.dir={run_dir}", "train.progress_bar=off", "data.num_workers=0"])
    live = read_findings(run_dir / FINDINGS_FILE)
    offline = diagnose_run(run_dir).findings
    with contextlib.redirect_stdout(io.StringIO()):
        doctor_exit = main(["doctor", str(run_dir)])
    return Outcome(status, live, offline, doctor_exit)


def check_fault(fault: Fault, outcome: Outcome) -> list[str]:
    """The ways ``outcome`` falls short of ``fault``'s expectation (empty: it raised its finding and no other)."""
    problems = []
    if outcome.status != fault.exit_status:
        problems.append(f"trainwell train exited {outcome.status}, expected {fault.exit_status}")
    if set(outcome.live) != {fault.expected}:
        problems.append(f"live findings {sorted(outcome.live)}, expected only {fault.expected}")
    if [f.id for f in outcome.offline] != [fault.expected]:
        problems.append(f"trainwell doctor found {[f.id for f in outcome.offline]}, expected [{fault.expected}]")
    found = outcome.live.get(fault.expected)
    if found is not None:
        text = f"{found.title} {found.evidence} {found.fix}"
        problems += [f"evidence lacks {s!r}" for s in fault.evidence if s.lower() not in text.lower()]
        severe = found.severity == "error"
        if outcome.doctor_exit != (1 if severe else 0):
            problems.append(f"trainwell doctor exited {outcome.doctor_exit} for a {found.severity}")
    return problems
