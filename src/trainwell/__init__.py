"""trainwell: a PyTorch training engine for research teams.

The Python API in a few names (the CLI, ``trainwell train CONFIG``, wires the same pieces)::

    from trainwell import ExperimentConfig, Trainer
    result = Trainer(cfg, MyTask(cfg.task, cfg.data)).fit()
"""

from trainwell.config.loader import ConfigError, load_config, validate_config
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.loop import FitResult, Trainer, build_task
from trainwell.engine.task import DataConfig, Evaluator, Task, TaskConfig

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataConfig",
    "Evaluator",
    "ExperimentConfig",
    "FitResult",
    "Task",
    "TaskConfig",
    "Trainer",
    "build_task",
    "load_config",
    "validate_config",
]
