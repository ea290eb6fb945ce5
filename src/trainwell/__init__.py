"""trainwell: a PyTorch training engine for research teams.

The Python API in a few names (the CLI, ``trainwell train CONFIG``, wires the same pieces)::

    from trainwell import ExperimentConfig, Trainer, build_run
    result = Trainer(build_run(cfg, MyTask(cfg.task, cfg.data))).fit()

Names are imported lazily, so ``import trainwell.metrics`` loads the metrics and nothing of the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "trainwell.config.loader",
    "load_config": "trainwell.experiment",
    "validate_config": "trainwell.config.loader",
    "ExperimentConfig": "trainwell.config.schema",
    "FitResult": "trainwell.engine.run",
    "build_run": "trainwell.api",
    "Trainer": "trainwell.engine.loop",
    "build_task": "trainwell.experiment",
    "DataConfig": "trainwell.engine.task",
    "Evaluator": "trainwell.engine.task",
    "Task": "trainwell.engine.task",
    "TaskConfig": "trainwell.config.schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
