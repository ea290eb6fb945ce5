"""Read a config: YAML file + ``KEY=VALUE`` overrides, validated against the typed schema.

OmegaConf does the merging and type validation (structured configs from dataclasses); this module
adds what people need when something is wrong: the key, the file (or the override) and, for a typo,
the nearest valid key. Everything is checked before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from trainwell.config.schema import DataConfig, ExperimentConfig, config_to_dict, config_to_yaml
from trainwell.config.yaml_checks import YamlShapeError, check_no_alias_bomb, check_no_duplicate_keys


class ConfigError(Exception):
    """A problem in an experiment file or override, phrased for the person who wrote it."""


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``amp: off`` stays the string "off"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# PyYAML reads 3e-4 (no dot) as a string; research configs write learning rates that way.
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    """Compose ``text``, refuse repeated keys and alias bombs on the node graph, then build the Python objects.

    Raises:
        YamlShapeError: naming the key and lines (the caller names the file or the override).
        yaml.YAMLError: for text that is not YAML.
    """
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_no_alias_bomb(node)  # first: the duplicate check must not walk an exponential expansion either
        check_no_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_yaml_value(text: str) -> Any:
    """Parse one override value the way it would read in the YAML file."""
    return _load_yaml(text) if text.strip() else ""


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"Config file '{path}' does not exist. Pass the path of an experiment YAML file, "
            f"e.g. configs/hand_pose/synthetic_lifting.yaml."
        )
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except YamlShapeError as err:
        raise ConfigError(f"Config file '{path}': {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections, not {type(data).__name__}.")
    return data


def _parse_overrides(overrides: list[str]) -> list[tuple[str, Any, str]]:
    parsed = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Command-line override '{text}' is not of the form KEY=VALUE (e.g. optim.lr=3e-4).")
        try:
            parsed.append((key.strip(), parse_yaml_value(value), text))
        except (YamlShapeError, yaml.YAMLError) as err:
            raise ConfigError(f"Command-line override '{text}': the value is not usable YAML: {err}") from None
    return parsed


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for name in node.keys() if hasattr(node, "keys") else []:
        full = f"{prefix}{name}"
        keys.append(full)
        child = node._get_node(name)
        if OmegaConf.is_dict(child) and not child._is_missing() and not child._is_none():
            keys.extend(_valid_keys(child, full + "."))
    return keys


def _explain(err: OmegaConfBaseException, schema: Any, source: str) -> ConfigError:
    full_key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        keys = _valid_keys(schema)
        section = full_key.rpartition(".")[0]
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
        hint = difflib.get_close_matches(full_key, keys, n=1, cutoff=0.6)
        msg = f"Unknown config key '{full_key}' in {source}."
        msg += f" Did you mean '{hint[0]}'?" if hint else ""
        msg += f" Valid keys in '{section or '<top level>'}': {', '.join(siblings)}."
        return ConfigError(msg)
    reason = str(err).splitlines()[0]
    return ConfigError(f"Invalid value for config key '{full_key}' in {source}: {reason}. Fix it and run again.")


def validate_config(cfg: ExperimentConfig, source: str = "the config") -> None:
    """Check value ranges of a config built in Python (``load_config`` does this for files).

    Raises:
        ConfigError: naming the key and the allowed range.
    """
    _check_ranges(cfg, lambda key: source)


def _check_ranges(cfg: ExperimentConfig, source_of: Any) -> None:
    """Raise for the first out-of-range value; ``source_of(key)`` names where the value came from."""
    for key, what in cfg.problems():
        value: Any = cfg
        for part in key.split("["):
            part = part.rstrip("]")
            for name in part.split("."):
                if not name:
                    continue
                if name.isdigit():
                    value = value[int(name)]
                else:
                    value = value.get(name, "?") if isinstance(value, dict) else getattr(value, name, "?")
        raise ConfigError(f"Config key '{key}' in {source_of(key)} {what} (got {value!r}).")


@dataclass(frozen=True)
class ConfigSource:
    """A config file read as YAML and its parsed ``KEY=VALUE`` overrides, not yet typed or validated."""

    path: Path
    raw: dict[str, Any]
    overrides: list[tuple[str, Any, str]]
    """``(dotted key, value, the override's text)`` in command-line order."""

    def task_class_path(self) -> tuple[str, str]:
        """``task.class_path`` (an override wins over the file) and where it came from, for messages.

        Raises:
            ConfigError: neither the file nor an override names the task.
        """
        class_path, source = (self.raw.get("task") or {}).get("class_path"), f"'{self.path}'"
        for key, value, text in self.overrides:
            if key == "task.class_path":
                class_path, source = value, f"command-line override '{text}'"
        if not class_path:
            raise ConfigError(
                f"Config file '{self.path}' has no task.class_path: add a 'task:' section naming the task "
                f"class, e.g. 'class_path: trainwell.tasks.hand_pose:HandPoseTask'."
            )
        return str(class_path), source


def read_config_source(path: str | Path, overrides: list[str] | None = None) -> ConfigSource:
    """Read ``path`` (duplicate keys and alias bombs refused) and parse ``overrides``.

    Raises:
        ConfigError: naming the file or the override.
    """
    path = Path(path)
    return ConfigSource(path=path, raw=_read_yaml(path), overrides=_parse_overrides(overrides or []))


def typed_config(source: ConfigSource, task_section: Any, data_section: Any) -> ExperimentConfig:
    """Merge ``source`` into the schema whose task/data sections are the task's own dataclasses, then validate.

    ``task_section``/``data_section`` are instances of the task's ``Config``/``DataConfig`` (see
    :func:`trainwell.experiment.load_experiment`, which imports the task class to get them).

    Raises:
        ConfigError: with a message naming the key, the file or override, and a suggestion.
    """
    path, raw, parsed = source.path, source.raw, source.overrides
    schema = OmegaConf.structured(ExperimentConfig(task=task_section, data=data_section))
    try:
        cfg = OmegaConf.merge(schema, OmegaConf.create(raw))
    except OmegaConfBaseException as err:
        raise _explain(err, schema, f"'{path}'") from None
    for key, value, text in parsed:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(_nested(key, value)))
        except OmegaConfBaseException as err:
            raise _explain(err, schema, f"command-line override '{text}'") from None

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"Config '{path}' leaves required key(s) {', '.join(missing)} without a value: set them in the "
            f"file or on the command line (e.g. {missing[0]}=...)."
        )
    try:
        obj = OmegaConf.to_object(cfg)
    except (MissingMandatoryValue, OmegaConfBaseException) as err:
        raise _explain(err, schema, f"'{path}'") from None
    assert isinstance(obj, ExperimentConfig)
    overridden = {key: text for key, _, text in parsed}

    def source_of(key: str) -> str:
        plain = key.split("[")[0]
        return f"command-line override '{overridden[plain]}'" if plain in overridden else f"'{path}'"

    _check_ranges(obj, source_of)
    return obj


def read_run_config(path: str | Path) -> ExperimentConfig:
    """A run's ``config.yaml`` read back through the base schema (for the doctor and the report).

    Reading a run never runs its code: ``task.class_path`` is kept as a string and never imported, and the
    task/data sections keep only the base keys (the task's own keys are in the file itself).

    Raises:
        ConfigError: the file is not valid YAML, or its values do not fit the schema.
    """
    path = Path(path)
    if not path.is_file():
        return ExperimentConfig()
    raw = _read_yaml(path)
    raw["task"] = {"class_path": str((raw.get("task") or {}).get("class_path", "?"))}
    data = raw.get("data") or {}
    raw["data"] = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(DataConfig)}}
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), {k: v for k, v in raw.items() if k in known})
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"The run's config '{path}' does not fit this trainwell's schema: {err}") from None
    assert isinstance(obj, ExperimentConfig)
    return obj


__all__ = [
    "ConfigError",
    "config_to_dict",
    "config_to_yaml",
    "read_config_source",
    "read_run_config",
    "typed_config",
    "validate_config",
]
