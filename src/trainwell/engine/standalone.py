"""``trainwell eval`` and ``trainwell predict`` without a Trainer: model + checkpoint weights + val set + evaluator.

No training set, optimizer, schedule or doctor is built; the evaluation is the same exactly-once path the
training loop uses (``engine.evaluation.evaluate``), so the numbers match the ones logged during training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from trainwell.config.schema import ExperimentConfig
from trainwell.engine import distributed as D
from trainwell.engine.amp import amp_dtype, autocast
from trainwell.engine.checkpoint.resume import run_dir_of_checkpoint
from trainwell.engine.checkpoint.weights import load_model_weights
from trainwell.engine.eval_all import Evaluated, evaluate_all
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.engine.logging import setup_console_logging
from trainwell.engine.runtime import configure_threads, seed_everything
from trainwell.engine.task import Task


def _model_from_checkpoint(
    cfg: ExperimentConfig, task: Task, checkpoint: str | Path, device: torch.device
) -> nn.Module:
    """The task's model with the checkpoint's weights (strict), in eval mode, on ``device``."""
    task.run_dir = run_dir_of_checkpoint(checkpoint)  # tokenizers and vocabularies saved beside the checkpoints
    model = task.build_model().to(device)
    load_model_weights(
        model, checkpoint, strict=True, map_location=device, foreign=task.foreign_weights, ema=cfg.eval.use_ema
    )
    return model.eval()


Split = Literal["val", "test"]


@dataclass
class _EvalSetup:
    """What an evaluation without a Trainer needs, built once: process group, device, logger, val set."""

    cfg: ExperimentConfig
    task: Task
    env: D.DistEnv
    device: torch.device
    log: logging.Logger
    dataset: Any
    split: Split

    def evaluate(self, model: nn.Module, outputs_dir: Path | None = None) -> EvalResult:
        """The exactly-once evaluation of ``model`` (the path the training loop uses)."""
        dtype = amp_dtype(self.cfg.train.amp)
        task = self.task
        evaluator = task.build_evaluator() if self.split == "val" else task.build_test_evaluator(self.dataset)
        return evaluate(
            task=self.task,
            model=model,
            dataset=self.dataset,
            evaluator=evaluator,
            batch_size=self.cfg.eval.batch_size,
            device=self.device,
            env=self.env,
            autocast=lambda: autocast(self.device, dtype),
            num_workers=self.cfg.data.num_workers,
            log=self.log.info,
            progress_mode=self.cfg.train.progress_bar,
            outputs_dir=outputs_dir if self.env.is_main else None,
        )


def _setup(cfg: ExperimentConfig, task: Task, run_dir: Path | None, split: Split = "val") -> _EvalSetup:
    env = D.env_from_torchrun()
    device = D.select_device(cfg.train.device, env)
    configure_threads(cfg.train.num_threads)
    D.init_process_group(env, device, cfg.distributed.backend, cfg.distributed.timeout_s)
    log = setup_console_logging(None, env.is_main)
    seed_everything(cfg.train.seed)  # a dataset that draws from the global RNG must be the same everywhere
    task.run_dir = run_dir  # tokenizers and vocabularies saved beside the checkpoints
    dataset = task.build_val_dataset() if split == "val" else task.build_test_dataset()
    return _EvalSetup(cfg, task, env, device, log, dataset, split)


def evaluate_checkpoint(
    cfg: ExperimentConfig,
    task: Task,
    checkpoint: str | Path,
    *,
    outputs_dir: Path | None = None,
    split: Split = "val",
) -> tuple[EvalResult, D.DistEnv]:
    """Score ``checkpoint`` on the validation (or test) split exactly once, on every process of the job."""
    setup = _setup(cfg, task, run_dir_of_checkpoint(checkpoint), split)
    model = _model_from_checkpoint(cfg, task, checkpoint, setup.device)
    return setup.evaluate(model, outputs_dir), setup.env


def evaluate_run_checkpoints(
    cfg: ExperimentConfig, task: Task, run_dir: Path, *, watch: bool, poll_seconds: float
) -> tuple[list[Evaluated], D.DistEnv]:
    """``trainwell eval --all-checkpoints RUN_DIR``: see :mod:`trainwell.engine.eval_all`."""
    setup = _setup(cfg, task, run_dir)
    model = task.build_model().to(setup.device)
    done = evaluate_all(
        run_dir,
        model=model,
        evaluate=setup.evaluate,
        env=setup.env,
        log=setup.log.info,
        watch=watch,
        poll_seconds=poll_seconds,
    )
    return done, setup.env


def predict_file(
    cfg: ExperimentConfig, task: Task, checkpoint: str | Path, input_path: Path, out_dir: Path | None
) -> Any:
    """``Task.predict`` on one input file with the checkpoint's model (one process, eval mode, no grad)."""
    device = D.select_device(cfg.train.device, D.DistEnv())
    configure_threads(cfg.train.num_threads)
    model = _model_from_checkpoint(cfg, task, checkpoint, device)
    created = out_dir is not None and not out_dir.exists()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)  # the task may write its own formats there
    try:
        with torch.no_grad(), autocast(device, amp_dtype(cfg.train.amp)):
            return task.predict(model, input_path, out_dir)
    except BaseException:
        if created and out_dir is not None and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a refused input leaves nothing behind
        raise
