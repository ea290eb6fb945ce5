"""An experiment is a config plus the task class it names: load both, or build the task.

This is the one place a config's ``task.class_path`` is imported. It sits above the engine (a task is an engine
:class:`~trainwell.engine.task.Task`) so that ``trainwell.config`` stays below it and reading a run's config back
(the doctor, the report) never imports the run's code.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

from trainwell.config.loader import ConfigError, read_config_source, typed_config
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.task import Task


def import_task_class(class_path: str, source: str) -> type[Task]:
    """Import ``package.module:ClassName`` and check it is a :class:`Task`."""
    module_name, sep, attr = class_path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"task.class_path '{class_path}' (in {source}) must look like 'package.module:ClassName', "
            f"e.g. trainwell.tasks.hand_pose:HandPoseTask."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"task.class_path '{class_path}' (in {source}): cannot import module '{module_name}': {err}. "
            f"Check the spelling and that the package is installed in this environment."
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        hint = difflib.get_close_matches(attr, names, n=1)
        raise ConfigError(
            f"task.class_path '{class_path}' (in {source}): module '{module_name}' has no '{attr}'"
            + (f" — did you mean '{hint[0]}'?" if hint else ".")
        )
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task.class_path '{class_path}' (in {source}) is not a subclass of trainwell Task.")
    return cls


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, type[Task]]:
    """Read ``path``, apply ``KEY=VALUE`` overrides, validate; return the typed config and the task class.

    The task class is imported here, once: its ``Config``/``DataConfig`` type the task/data sections.

    Raises:
        ConfigError: with a message naming the key, the file or override, and a suggestion.
    """
    source = read_config_source(path, overrides)
    task_cls = import_task_class(*source.task_class_path())
    return typed_config(source, task_cls.Config(), task_cls.DataConfig()), task_cls


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read ``path``, apply ``KEY=VALUE`` overrides, validate, and return the typed config."""
    return load_experiment(path, overrides)[0]


def build_task(cfg: ExperimentConfig) -> Task:
    """Instantiate the task named by ``task.class_path`` with its typed sections (Python API; the CLI uses the
    class :func:`load_experiment` returned)."""
    return import_task_class(cfg.task.class_path, "the config")(cfg.task, cfg.data)


__all__ = ["ConfigError", "build_task", "import_task_class", "load_config", "load_experiment"]
