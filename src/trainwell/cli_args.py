"""The command line of ``trainwell``: one small function per command declaring its arguments (``cli.py`` runs them)."""

from __future__ import annotations

import argparse

_OVERRIDES_HELP = "dotted overrides of config keys, e.g. optim.lr=3e-4 train.epochs=5"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (``trainwell --help``)."""
    parser = argparse.ArgumentParser(
        prog="trainwell",
        description="trainwell: a PyTorch training engine. Run `trainwell COMMAND --help` for details.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _train_command(sub)
    _eval_command(sub)
    _test_command(sub)
    _predict_command(sub)
    _export_command(sub)
    _doctor_command(sub)
    _report_command(sub)
    return parser


def _train_command(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from an experiment YAML file",
        description=(
            "Train from an experiment YAML file. Outputs go to runs/<run.name>/<timestamp> (or run.dir): "
            "config.yaml, train.log, metrics.jsonl, tb/, checkpoints/. Multi-process: "
            "torchrun --nproc_per_node=N -m trainwell train CONFIG."
        ),
    )
    train.add_argument("config", help="experiment YAML file, e.g. configs/hand_pose/synthetic_lifting.yaml")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    train.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue a run: 'auto' = the newest valid checkpoint in run.dir (a fresh start if there is none), "
        "or a checkpoint file (its run directory is reused unless run.dir is given). On SIGTERM/SIGINT/SIGUSR1 "
        "a run writes last.pt and exits with 128 + the signal number (143/130/138).",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="run.dir already holds a run: move it aside to <run.dir>.old-<timestamp> (kept, printed) and start "
        "afresh there. Without --overwrite or --resume such a run.dir is refused.",
    )
    train.add_argument(
        "--init-from",
        metavar="PATH",
        help="start from the model weights of this checkpoint or state dict (fine-tuning); optimizer, schedule "
        "and step start afresh. Any missing, unexpected or differently shaped tensor is an error.",
    )
    train.add_argument(
        "--init-from-non-strict",
        action="store_true",
        help="with --init-from: load the tensors that match and report the others instead of failing",
    )


def _eval_command(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the validation set (every sample exactly once)",
        description="Evaluate a checkpoint's model on the validation set of an experiment.",
    )
    ev.add_argument(
        "config",
        nargs="?",
        help="experiment YAML file the checkpoint was trained with (with --all-checkpoints: "
        "the run's config.yaml by default)",
    )
    ev.add_argument("--checkpoint", help="checkpoint file (e.g. runs/.../checkpoints/best.pt)")
    ev.add_argument(
        "--all-checkpoints",
        metavar="RUN_DIR",
        help="evaluate every periodic checkpoint of RUN_DIR once, in step order (OpenPCDet's --eval_all); records "
        "in RUN_DIR/eval_all/ (metrics.jsonl, TensorBoard Val/<metric> at each checkpoint's step); already "
        "evaluated checkpoints are skipped",
    )
    ev.add_argument(
        "--watch",
        action="store_true",
        help="with --all-checkpoints: keep waiting for new checkpoints while the run trains; stop once its "
        "status.json says it ended",
    )
    ev.add_argument("--poll-seconds", type=float, default=30.0, help="with --watch: seconds between scans")
    ev.add_argument("--out", help="write {num_samples, world_size, metrics, checkpoint} as JSON to this file")
    ev.add_argument(
        "--export",
        metavar="DIR",
        help="write the evaluator's prediction files here (COCO captions.json, KITTI results, FreiHAND pred.json)",
    )
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)


def _test_command(sub: argparse._SubParsersAction) -> None:
    te = sub.add_parser(
        "test",
        help="evaluate a checkpoint on the task's test split (every sample exactly once)",
        description="Score a checkpoint's model on the test split the task defines (Task.build_test_dataset), "
        "exactly once over all processes; prints the metrics as `eval` does. The test split is never used during "
        "training.",
    )
    te.add_argument("config", help="experiment YAML file the checkpoint was trained with")
    te.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.pt)")
    te.add_argument("--out", help="write {split, num_samples, world_size, metrics, checkpoint} as JSON here")
    te.add_argument("--export", metavar="DIR", help="write the evaluator's prediction files here")
    te.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)


def _predict_command(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "predict",
        help="run a checkpoint's model on one input file (the task reads it)",
        description="Predict with a checkpoint's model on the inputs of one file; prints JSON and writes "
        "OUT/predictions.json (plus the task's own formats) when --out is given.",
    )
    pr.add_argument("config", help="experiment YAML file the checkpoint was trained with")
    pr.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.pt)")
    pr.add_argument(
        "--input", required=True, help="input file or dataset root (e.g. HO3D's), in a form the task's predict() reads"
    )
    pr.add_argument("--out", help="directory for predictions.json and the task's files")
    pr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)


def _export_command(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "export",
        help="write a checkpoint's model weights as a plain state dict (.pt or .safetensors)",
        description="Write the model weights of CHECKPOINT as a plain state dict: FILE.safetensors (safetensors) or "
        "FILE.pt (torch.load(f, weights_only=True) -> model.load_state_dict), plus FILE.json with the run's config "
        "and metrics. Loadable by code that knows nothing of trainwell.",
    )
    ex.add_argument("checkpoint", help="a trainwell checkpoint: a file, or a sharded directory (consolidated)")
    ex.add_argument("--out", required=True, help="output file: *.safetensors or *.pt")
    ex.add_argument(
        "--format",
        choices=["plain", "openpcdet", "viecap"],
        default="plain",
        help="plain: a state dict (default); openpcdet: OpenPCDet's checkpoint_epoch_N.pth container (detection3d); "
        "viecap: ViECap's coco_prefix-00N.pt, the state dict its ClipCaptionModel loads with strict=True (captioning)",
    )
    ex.add_argument(
        "--no-gpt2-buffers",
        action="store_true",
        help="with --format viecap: leave out GPT-2's attention-mask buffers (attn.bias, attn.masked_bias), which "
        "ViECap's pinned transformers 4.19 saves and transformers >= 4.31 does not",
    )
    ex.add_argument("--ema", action="store_true", help="export the EMA weights (train.ema) instead of the model's")
    ex.set_defaults(overrides=[])


def _doctor_command(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="diagnose a finished or running run from its files",
        description=(
            "Print the training doctor's findings for a run directory (metrics.jsonl, findings.jsonl, "
            "config.yaml, train.log). Exits with 1 when a severe finding (an error) exists, 0 otherwise."
        ),
    )
    doctor.add_argument("run_dir", help="a run directory, e.g. runs/<name>/<timestamp>")
    doctor.set_defaults(overrides=[])


def _report_command(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report",
        help="write report.html with plots of a run and the doctor's findings",
        description="Write RUN_DIR/report.html and its plots (report_files/*.png) for a finished or running run.",
    )
    report.add_argument("run_dir", help="a run directory, e.g. runs/<name>/<timestamp>")
    report.add_argument("--out", help="write the report here instead of RUN_DIR/report.html")
    report.set_defaults(overrides=[])
