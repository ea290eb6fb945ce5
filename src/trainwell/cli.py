"""Command line: ``trainwell train`` and ``trainwell eval`` — the one place that wires config, task and engine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainwell.config.loader import ConfigError, load_config
from trainwell.engine import distributed as D
from trainwell.engine.checkpoint import CheckpointError
from trainwell.engine.evaluation import CoverageError

EXIT_CONFIG_ERROR = 2
"""Exit status for a bad config file, override or argument (nothing was built)."""
EXIT_RUN_ERROR = 1
"""Exit status for a run that failed (unreadable checkpoint, evaluation coverage error, …)."""

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

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the validation set (every sample exactly once)",
        description="Evaluate a checkpoint's model on the validation set of an experiment.",
    )
    ev.add_argument("config", help="experiment YAML file the checkpoint was trained with")
    ev.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.pt)")
    ev.add_argument("--out", help="write {num_samples, world_size, metrics, checkpoint} as JSON to this file")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    return parser


def _train(args: argparse.Namespace) -> int:
    from trainwell.engine.loop import Trainer, build_task

    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, build_task(cfg))
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trainwell`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    handlers = {"train": _train, "eval": _eval}
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"trainwell: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (CheckpointError, CoverageError) as err:
        print(f"trainwell: error: {err}", file=sys.stderr)
        return EXIT_RUN_ERROR
    finally:
        D.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
