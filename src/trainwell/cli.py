"""Command line: ``trainwell train | eval | predict | export | doctor | report`` — the one place that wires config,
task and engine."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from trainwell.cli_args import build_parser
from trainwell.config.loader import ConfigError
from trainwell.config.schema import ExperimentConfig
from trainwell.engine import distributed as D
from trainwell.engine.best import BestMetricError
from trainwell.engine.checkpoint import CheckpointError
from trainwell.engine.checkpoint.resume import directory_instead_of_checkpoint, run_dir_of_checkpoint
from trainwell.engine.evaluation import CoverageError
from trainwell.engine.fsdp import ShardingError
from trainwell.engine.losses import LossContractError
from trainwell.engine.nonfinite import NonFiniteLossError
from trainwell.engine.optim import OptimConfigError
from trainwell.engine.plan import PlanError
from trainwell.engine.rundir import CONTINUE, OVERWRITE, REFUSE, RunDirError
from trainwell.engine.signals import EXIT_SIGNAL_BASE, TrainingInterrupted
from trainwell.engine.task import DataError, Task, TaskCapabilityError, require_capability
from trainwell.experiment import load_experiment
from trainwell.records.jsonl import RecordVersionError

EXIT_CONFIG_ERROR = 2
"""Exit status for a bad config file, override or argument (nothing was built)."""
EXIT_RUN_ERROR = 1
"""Exit status for a run that failed (unreadable checkpoint, evaluation coverage error, …)."""
EXIT_STOPPED_BY_SIGNAL = EXIT_SIGNAL_BASE
"""A run stopped by signal N (SIGTERM, SIGINT, SIGUSR1) exits with 128 + N — 143, 130, 138 — *after*
writing ``last.pt``; ``trainwell train CONFIG run.dir=DIR --resume auto`` continues it. A second Ctrl-C
aborts with 130: at once, or after the checkpoint being written is complete. (A process killed outright reports
-N, not 128 + N.)"""


def _load(args: argparse.Namespace) -> tuple[ExperimentConfig, Task]:
    """Config (validated) and task, built once; ``TRAINWELL_DEBUG_LOSS=1`` is recorded in the config."""
    cfg, task_cls = load_experiment(args.config, args.overrides)
    _require_device(cfg.train.device)
    if os.environ.get("TRAINWELL_DEBUG_LOSS", "") not in ("", "0"):
        cfg.diagnostics.debug_loss = True  # in config.yaml, so the run says why it printed loss internals
    return cfg, task_cls(cfg.task, cfg.data)


def _require_device(device: str) -> None:
    """``train.device: cuda`` on a machine without CUDA: one config error, before anything is built."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"train.device={device}, but this machine has no usable CUDA device (torch {torch.__version__} is {build}, "
            f"torch.cuda.is_available() is False): use train.device=auto (CUDA when there is one) or cpu."
        )


def _train(args: argparse.Namespace, callbacks: Sequence[Any] = ()) -> int:
    from trainwell.api import build_run
    from trainwell.engine.loop import Trainer
    from trainwell.engine.resuming import init_from, resume

    cfg, task = _load(args)
    if args.resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and cfg.run.dir:
        args.resume = "auto"  # torchrun restarted the group after a failure: continue from the newest valid checkpoint
    if args.resume == "auto" and cfg.run.dir is None:
        raise ConfigError("--resume auto continues the run in run.dir: pass run.dir=DIR (the directory to continue).")
    if args.resume not in (None, "auto"):
        if not Path(args.resume).exists():
            raise ConfigError(f"--resume '{args.resume}' does not exist (pass a checkpoint file or 'auto').")
        if (not_a_checkpoint := directory_instead_of_checkpoint(args.resume)) is not None:
            raise ConfigError(not_a_checkpoint)
        if cfg.run.dir is None and run_dir_of_checkpoint(args.resume) is not None:
            cfg.run.dir = str(run_dir_of_checkpoint(args.resume))  # continue that run, in its directory
    if args.init_from is not None and not Path(args.init_from).exists():
        raise ConfigError(f"--init-from '{args.init_from}' does not exist.")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in run.dir and --overwrite moves it aside: pass one of them.")
    existing = CONTINUE if args.resume else OVERWRITE if args.overwrite else REFUSE
    run = build_run(cfg, task, callbacks=callbacks, existing_run=existing, trackers=_trackers(cfg))
    try:
        resumed = resume(run, args.resume) if args.resume else None
        if resumed is None and args.init_from is not None:  # a resumed run already holds its own weights
            init_from(run, args.init_from, strict=not args.init_from_non_strict)
    except BaseException as err:
        run.fail_setup(err)  # `crashed` in a directory this run writes (a refused resume wrote nothing)
        raise
    Trainer(run).fit()  # records how it ended and gives the run directory's lock back
    return 0


def _trackers(cfg: ExperimentConfig) -> list[Any]:
    """The experiment trackers of ``log.trackers`` (rank 0 only: the other processes send nothing)."""
    from trainwell.trackers import build_trackers, require_installed

    require_installed(cfg.log.trackers)  # every process: the same config error everywhere
    return build_trackers(cfg, report=_tracker_report) if D.env_from_torchrun().is_main else []


def _tracker_report(run_dir: Path) -> Path | None:
    """The report the trackers store as an artifact when the run ends; failing to draw it costs the run nothing."""
    from trainwell.report import write_report

    try:
        return write_report(run_dir)
    except Exception as err:  # a report is a view of the run: the run's outcome does not depend on it
        print(
            f"warning: the report for log.trackers was not written ({type(err).__name__}: {err}); write it later "
            f"with `trainwell report {run_dir}`.",
            file=sys.stderr,
        )
        return None


def _require_file(path: str, flag: str) -> None:
    if not Path(path).exists():  # a file, or a sharded checkpoint directory
        raise ConfigError(f"{flag} '{path}' does not exist.")


def _eval(args: argparse.Namespace) -> int:
    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        args.overrides, args.config = [args.config, *args.overrides], None  # `eval --all-checkpoints RUN k=v`
    if (args.checkpoint is None) == (args.all_checkpoints is None):
        raise ConfigError("trainwell eval needs exactly one of --checkpoint FILE or --all-checkpoints RUN_DIR.")
    if args.all_checkpoints is not None:
        return _eval_all(args)
    if args.watch:
        raise ConfigError("--watch goes with --all-checkpoints RUN_DIR.")
    if args.config is None:
        raise ConfigError("trainwell eval CONFIG --checkpoint FILE: name the experiment YAML the checkpoint came from.")
    return _score_checkpoint(args, "val")


def _test(args: argparse.Namespace) -> int:
    return _score_checkpoint(args, "test")


def _score_checkpoint(args: argparse.Namespace, split: Literal["val", "test"]) -> int:
    """``eval`` / ``test``: one checkpoint scored once on the validation or test split; metrics printed (and --out)."""
    from trainwell.doctor.findings import Finding, format_finding
    from trainwell.engine.standalone import evaluate_checkpoint
    from trainwell.records.evaluation import eval_output

    cfg, task = _load(args)
    _require_file(args.checkpoint, "--checkpoint")
    export = Path(args.export) if args.export else None
    if split == "test":
        require_capability(task, "build_test_dataset", "trainwell test")
    result, env = evaluate_checkpoint(cfg, task, args.checkpoint, outputs_dir=export, split=split)
    units = {name: spec.unit for name, spec in task.metric_specs().items()}
    if env.is_main:
        for name, value in result.metrics.items():
            print(f"{name}: {value:.4f}{' ' + units[name] if units.get(name) else ''}")
        for path in result.outputs:
            print(f"wrote {path}")
        findings = [f for f in result.findings if isinstance(f, Finding)]
        for finding in findings:  # what the evaluator noticed, e.g. a metric it could not compute and why
            print(format_finding(finding)[0])
        if args.out:
            payload = eval_output(
                split=split,
                num_samples=result.num_samples,
                world_size=result.world_size,
                metrics=result.metrics,
                checkpoint=str(args.checkpoint),
                outputs=[str(p) for p in result.outputs],
                findings=[f.to_dict() for f in findings],
            )
            Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _eval_all(args: argparse.Namespace) -> int:
    from trainwell.engine.eval_all import periodic_checkpoints
    from trainwell.engine.standalone import evaluate_run_checkpoints

    run_dir = Path(args.all_checkpoints)
    if not (run_dir / "checkpoints").is_dir():
        raise ConfigError(
            f"--all-checkpoints '{run_dir}' is not a trainwell run directory (no checkpoints/ in it); pass the "
            "directory a run printed as 'run directory: ...'."
        )
    if args.config is None:
        args.config = str(run_dir / "config.yaml")
        _require_file(args.config, "the run's config")
    if args.poll_seconds <= 0:
        raise ConfigError(f"--poll-seconds must be > 0 (got {args.poll_seconds}).")
    if not args.watch and not periodic_checkpoints(run_dir / "checkpoints"):
        raise ConfigError(
            f"--all-checkpoints: {run_dir / 'checkpoints'} holds no periodic checkpoints (epoch_NNNN / "
            "step_NNNNNNNN; last.pt and best.pt are left out): the run wrote none (checkpoint.every_epochs or "
            "checkpoint.every 0) or kept none (checkpoint.keep 0). "
            "Evaluate one checkpoint with --checkpoint, or add --watch to wait for a run that is still writing them."
        )
    cfg, task = _load(args)
    done, env = evaluate_run_checkpoints(cfg, task, run_dir, watch=args.watch, poll_seconds=args.poll_seconds)
    if env.is_main:
        print(f"evaluated {len(done)} checkpoint(s) of {run_dir}; records in {run_dir / 'eval_all'}")
        if args.out:
            rows = [{"checkpoint": d.checkpoint, "epoch": d.epoch, "step": d.step, "metrics": d.metrics} for d in done]
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from trainwell.engine.standalone import predict_file

    cfg, task = _load(args)
    _require_file(args.checkpoint, "--checkpoint")
    if not Path(args.input).exists():  # a file, or a dataset root the task reads
        raise ConfigError(f"--input '{args.input}' does not exist.")
    out_dir = Path(args.out) if args.out else None
    try:
        result = predict_file(cfg, task, args.checkpoint, Path(args.input), out_dir)
    except NotImplementedError as err:
        raise ConfigError(str(err)) from None
    text = json.dumps(result, indent=2, default=_json_default)
    print(text)
    if out_dir is not None:
        (out_dir / "predictions.json").write_text(text + "\n", encoding="utf-8")
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _export(args: argparse.Namespace) -> int:
    from trainwell.engine.checkpoint.weights import export_weights

    _require_file(args.checkpoint, "checkpoint")
    if args.ema and args.format != "plain":
        raise ConfigError(f"--ema exports the plain format only (not --format {args.format}): drop one of the two.")
    if args.format == "openpcdet":
        from trainwell.tasks.detection3d.openpcdet_format import export_openpcdet

        paths, note = export_openpcdet(args.checkpoint, args.out)
        print(note)
    elif args.format == "viecap":
        from trainwell.tasks.captioning.viecap_format import export_viecap

        paths, note = export_viecap(args.checkpoint, args.out, gpt2_buffers=not args.no_gpt2_buffers)
        print(note)
    else:
        paths = export_weights(args.checkpoint, args.out, ema=args.ema)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from trainwell.doctor.offline import diagnose_run

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


def _without_worker_traceback(err: Exception) -> str:
    """The reader's own message: a DataLoader worker re-raises it with the worker's traceback text prepended."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.partition(f"{type(err).__name__}: ")[2] or last


def _parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line, taking KEY=VALUE words written after an option as overrides too.

    argparse matches all positionals at once, so overrides written after an option
    (`eval CONFIG --checkpoint X train.device=cpu`) come back unrecognised; anything else unrecognised is an error.
    """
    args, extra = parser.parse_known_args(argv)
    misplaced = [arg for arg in extra if "=" in arg and not arg.startswith("-")]
    if len(misplaced) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in misplaced)}")
    args.overrides = [*args.overrides, *misplaced]
    return args


def _run_command(args: argparse.Namespace, callbacks: Sequence[Any]) -> int:
    """Run the chosen command; the errors a user can fix become one message on stderr and an exit status, not a
    traceback (config errors :data:`EXIT_CONFIG_ERROR`, run errors :data:`EXIT_RUN_ERROR`)."""
    handlers = {
        "eval": _eval,
        "test": _test,
        "predict": _predict,
        "export": _export,
        "doctor": _doctor,
        "report": _report,
    }
    try:
        if args.command == "train":
            return _train(args, callbacks)
        return handlers[args.command](args)
    except (ConfigError, PlanError, BestMetricError, TaskCapabilityError, ShardingError) as err:
        print(f"trainwell: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (
        CheckpointError,
        CoverageError,
        NonFiniteLossError,
        LossContractError,
        OptimConfigError,
        RecordVersionError,
        RunDirError,
    ) as err:
        print(f"trainwell: error: {err}", file=sys.stderr)
        return EXIT_RUN_ERROR
    except DataError as err:  # before OSError: a missing dataset file is both
        print(f"trainwell: data error: {_without_worker_traceback(err)}", file=sys.stderr)
        return EXIT_RUN_ERROR
    except OSError as err:  # the filesystem refused (no permission, disk full, a file in the way): not a traceback
        where = f" '{err.filename}'" if err.filename else ""
        print(
            f"trainwell: error: {err.strerror or err}{where}. Check that the path exists with the permissions the "
            "run needs, and that its filesystem has free space.",
            file=sys.stderr,
        )
        return EXIT_RUN_ERROR
    except TrainingInterrupted as err:  # the loop has logged where it stopped and how to continue
        return err.exit_code
    except KeyboardInterrupt:
        print("trainwell: aborted (second Ctrl-C); nothing saved since the last checkpoint.", file=sys.stderr)
        return EXIT_SIGNAL_BASE + 2
    finally:
        D.destroy_process_group()


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = ()) -> int:
    """Entry point of the ``trainwell`` console script; returns the exit status.

    ``callbacks``: objects with ``on_step_end(run)`` handed to the run of ``train`` (a seam for tools and
    tests that drive the real command, e.g. to stop a run at an exact step).
    """
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # a bare `trainwell`: the help, not an argparse error
        parser.print_help()
        return 0
    return _run_command(_parse_args(parser, argv), callbacks)


if __name__ == "__main__":
    sys.exit(main())
