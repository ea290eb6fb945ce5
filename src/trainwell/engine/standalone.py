"""``trainwell eval`` and ``trainwell predict`` without a Trainer: model + checkpoint weights + val set + evaluator.

No training set, optimizer, schedule or doctor is built; the evaluation is the same exactly-once path the
training loop uses (``engine.evaluation.evaluate``), so the numbers match the ones logged during training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.config.schema import ExperimentConfig
from trainwell.engine import distributed as D
from trainwell.engine.amp import amp_dtype, autocast
from trainwell.engine.checkpoint.resume import run_dir_of_checkpoint
from trainwell.engine.checkpoint.weights import load_model_weights
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
    load_model_weights(model, checkpoint, strict=True, map_location=device, ema=cfg.eval.use_ema)
    return model.eval()


def evaluate_checkpoint(
    cfg: ExperimentConfig, task: Task, checkpoint: str | Path, *, outputs_dir: Path | None = None
) -> tuple[EvalResult, D.DistEnv]:
    """Score ``checkpoint`` on the validation set exactly once, on every process of the job (torchrun or not)."""
    env = D.env_from_torchrun()
    device = D.select_device(cfg.train.device, env)
    configure_threads(cfg.train.num_threads)
    D.init_process_group(env, device, cfg.distributed.backend, cfg.distributed.timeout_s)
    log = setup_console_logging(None, env.is_main)
    seed_everything(cfg.train.seed)  # a dataset that draws from the global RNG must be the same everywhere
    model = _model_from_checkpoint(cfg, task, checkpoint, device)
    val_set = task.build_val_dataset()
    dtype = amp_dtype(cfg.train.amp)
    result = evaluate(
        task=task,
        model=model,
        dataset=val_set,
        evaluator=task.build_evaluator(),
        batch_size=cfg.eval.batch_size,
        device=device,
        env=env,
        autocast=lambda: autocast(device, dtype),
        num_workers=cfg.data.num_workers,
        log=log.info,
        progress_mode=cfg.train.progress_bar,
        outputs_dir=outputs_dir if env.is_main else None,
    )
    return result, env


def predict_file(
    cfg: ExperimentConfig, task: Task, checkpoint: str | Path, input_path: Path, out_dir: Path | None
) -> Any:
    """``Task.predict`` on one input file with the checkpoint's model (one process, eval mode, no grad)."""
    device = D.select_device(cfg.train.device, D.DistEnv())
    configure_threads(cfg.train.num_threads)
    model = _model_from_checkpoint(cfg, task, checkpoint, device)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), autocast(device, amp_dtype(cfg.train.amp)):
        return task.predict(model, input_path, out_dir)
