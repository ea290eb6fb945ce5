"""Command line: ``trainwell train | eval | doctor | report`` — the one place that wires config, task and engine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainwell.config.loader import ConfigError, load_config
from trainwell.engine import distributed as D
from trainwell.engine.checkpoint import CheckpointError
from trainwell.engine.doctor import NonFiniteLossError
from trainwell.engine.evaluation import CoverageError
from trainwell.engine.resume import run_dir_of_checkpoint
from trainwell.engine.signals import EXIT_SIGNAL_BASE, TrainingInterrupted

EXIT_CONFIG_ERROR = 2
"""Exit status for a bad config file, override or argument (nothing was built)."""
EXIT_RUN_ERROR = 1
"""Exit status for a run that failed (unreadable checkpoint, evaluation coverage error, …)."""
EXIT_STOPPED_BY_SIGNAL = EXIT_SIGNAL_BASE
"""A run stopped by signal N (SIGTERM, SIGINT, SIGUSR1) exits with 128 + N — 143, 130, 138 — *after*
writing ``last.pt``; ``trainwell train CONFIG run.dir=DIR --resume auto`` continues it. A second Ctrl-C
aborts at once with 130 and writes nothing. (A process killed outright reports -N, not 128 + N.)"""

_OVERRIDES_HELP = "dotted overrides of config keys, e.g. optim.lr=3e-4 train.epochs=5"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainwell",
        description="trainwell: a PyTorch training engine. Run `trainwell COMMAND --help` for details.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the validation set (every sample exactly once)",
        description="Evaluate a checkpoint's model on the validation set of an experiment.",
    )
    ev.add_argument("config", help="experiment YAML file the checkpoint was trained with")
    ev.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.pt)")
    ev.add_argument("--out", help="write {num_samples, world_size, metrics, checkpoint} as JSON to this file")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)

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

    report = sub.add_parser(
        "report",
        help="write report.html with plots of a run and the doctor's findings",
        description="Write RUN_DIR/report.html and its plots (report_files/*.png) for a finished or running run.",
    )
    report.add_argument("run_dir", help="a run directory, e.g. runs/<name>/<timestamp>")
    report.add_argument("--out", help="write the report here instead of RUN_DIR/report.html")
    report.set_defaults(overrides=[])
    return parser


def _train(args: argparse.Namespace) -> int:
    from trainwell.engine.loop import Trainer, build_task

    cfg = load_config(args.config, args.overrides)
    if args.resume == "auto" and cfg.run.dir is None:
        raise ConfigError("--resume auto continues the run in run.dir: pass run.dir=DIR (the directory to continue).")
    if args.resume not in (None, "auto"):
        if not Path(args.resume).is_file():
            raise ConfigError(f"--resume '{args.resume}' does not exist (pass a checkpoint file or 'auto').")
        if cfg.run.dir is None and run_dir_of_checkpoint(args.resume) is not None:
            cfg.run.dir = str(run_dir_of_checkpoint(args.resume))  # continue that run, in its directory
    if args.init_from is not None and not Path(args.init_from).is_file():
        raise ConfigError(f"--init-from '{args.init_from}' does not exist.")
    trainer = Trainer(cfg, build_task(cfg))
    resumed = trainer.resume(args.resume) if args.resume else None
    if resumed is None and args.init_from is not None:  # a resumed run already holds its own weights
        trainer.init_from(args.init_from, strict=not args.init_from_non_strict)
    trainer.fit()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from trainwell.engine.loop import Trainer, build_task

    cfg = load_config(args.config, args.overrides)
    if not Path(args.checkpoint).is_file():
        raise ConfigError(f"--checkpoint '{args.checkpoint}' does not exist.")
    trainer = Trainer(cfg, build_task(cfg), write_outputs=False)
    trainer.load_model_weights(args.checkpoint)
    result = trainer.evaluate()
    units = trainer.task.metric_units()
    if trainer.env.is_main:
        for name, value in result.metrics.items():
            print(f"{name}: {value:.4f}{' ' + units[name] if name in units else ''}")
        if args.out:
            payload = {
                "num_samples": result.num_samples,
                "world_size": result.world_size,
                "metrics": result.metrics,
                "checkpoint": str(args.checkpoint),
            }
            Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from trainwell.engine.doctor import diagnose_run

    try:
        diagnosis = diagnose_run(args.run_dir)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print("\n".join(diagnosis.lines()))
    return EXIT_RUN_ERROR if diagnosis.has_severe else 0


def _report(args: argparse.Namespace) -> int:
    from trainwell.report import write_report

    try:
        path = write_report(args.run_dir, args.out)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print(f"Wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trainwell`` console script; returns the exit status."""
    parser = _parser()
    # argparse matches all positionals at once, so KEY=VALUE overrides written after an option
    # (`eval CONFIG --checkpoint X train.device=cpu`) come back unrecognised: take them as overrides.
    args, extra = parser.parse_known_args(argv)
    misplaced = [arg for arg in extra if "=" in arg and not arg.startswith("-")]
    if len(misplaced) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in misplaced)}")
    args.overrides = [*args.overrides, *misplaced]
    handlers = {"train": _train, "eval": _eval, "doctor": _doctor, "report": _report}
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"trainwell: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (CheckpointError, CoverageError, NonFiniteLossError) as err:
        print(f"trainwell: error: {err}", file=sys.stderr)
        return EXIT_RUN_ERROR
    except TrainingInterrupted as err:  # the loop has logged where it stopped and how to continue
        return err.exit_code
    except KeyboardInterrupt:
        print("trainwell: aborted (second Ctrl-C); nothing saved since the last checkpoint.", file=sys.stderr)
        return EXIT_SIGNAL_BASE + 2
    finally:
        D.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
