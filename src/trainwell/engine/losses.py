"""The loss contract: what ``Task.compute_losses`` may return, checked once per set of names, with one clear error.

A component is a *weighted scalar floating tensor that requires grad* (the engine sums and backpropagates them);
logged-only values and progress-bar items (``LossOutput.logs`` / ``.progress``) are scalar tensors or floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainwell.engine.task import LossOutput

LOSS_PREFIX = "loss/"
"""Loss components are recorded as ``loss/<name>`` (the total as ``loss``), and shown in TensorBoard and the
trackers as ``Train/loss/<name>``. This module is the one place that spells the prefix: :func:`loss_key`,
:func:`component_name`, :func:`split_loss_values` — for the log, the doctor, the non-finite policy and the report."""


def loss_key(name: str) -> str:
    """The record key of loss component ``name``."""
    return LOSS_PREFIX + name


def component_name(key: str) -> str:
    """The component name of record key ``key`` (``loss/box`` → ``box``; other keys unchanged)."""
    return key.removeprefix(LOSS_PREFIX)


def split_loss_values(values: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """``(components, logged)``: ``{name: value}`` of the ``loss/<name>`` entries, and every other entry as it is."""
    components = {component_name(k): v for k, v in values.items() if k.startswith(LOSS_PREFIX)}
    logged = {k: v for k, v in values.items() if not k.startswith(LOSS_PREFIX)}
    return components, logged


class LossContractError(TypeError):
    """``compute_losses`` returned something the engine cannot optimise; the message names the component."""


def split_output(
    output: Any, task_name: str
) -> tuple[Mapping[str, torch.Tensor], Mapping[str, Any], Mapping[str, Any]]:
    """``(losses, logs, progress)`` of a ``compute_losses`` result (a dict or a :class:`LossOutput`)."""
    if isinstance(output, LossOutput):
        return output.losses, output.logs, output.progress
    if isinstance(output, Mapping):
        return output, {}, {}
    if isinstance(output, tuple) and len(output) == 3:
        raise LossContractError(
            f"{task_name}.compute_losses returned a 3-tuple; an OpenPCDet-style (loss, tb_dict, disp_dict) maps onto "
            "trainwell as LossOutput(losses={name: tb_dict[name] for the summed parts}, logs=<other tb_dict items>, "
            "progress=disp_dict)."
        )
    raise LossContractError(
        f"{task_name}.compute_losses must return a dict of named loss tensors or a LossOutput, not "
        f"{type(output).__name__}."
    )


def check_losses(losses: Mapping[str, Any], logs: Mapping[str, Any], task_name: str) -> None:
    """Raise :class:`LossContractError` for the first component that breaks the contract (before any update)."""
    if not losses:
        raise LossContractError(f"{task_name}.compute_losses returned no loss components.")
    for name, value in losses.items():
        where = f"{task_name}.compute_losses: loss component '{name}'"
        if not isinstance(value, torch.Tensor):
            raise LossContractError(
                f"{where} is a {type(value).__name__}, not a tensor. Return the tensor itself (no .item(), float() "
                "or .detach()); values that are only logged belong in LossOutput(logs=...)."
            )
        if value.numel() != 1:
            raise LossContractError(
                f"{where} has shape {tuple(value.shape)}; components must be scalars (reduce it, e.g. .mean())."
            )
        if not value.is_floating_point():
            raise LossContractError(f"{where} has dtype {value.dtype}; it must be a floating-point tensor.")
        if not value.requires_grad:
            raise LossContractError(
                f"{where} does not require grad, so it cannot be optimised: it was computed under torch.no_grad(), "
                "from detached values, or every parameter it depends on is frozen (requires_grad=False). A value "
                "that is only logged belongs in LossOutput(logs=...)."
            )
    for name, value in logs.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise LossContractError(
                f"{task_name}.compute_losses: logged value '{name}' has shape {tuple(value.shape)}; log scalars."
            )
        if not isinstance(value, torch.Tensor | int | float) or isinstance(value, bool):
            raise LossContractError(
                f"{task_name}.compute_losses: logged value '{name}' is a {type(value).__name__}; log tensors or "
                "numbers."
            )


def record_names(losses: Mapping[str, Any], tensor_logs: list[str]) -> tuple[str, ...]:
    """The meter's names: ``loss/<name>`` per component, then the logged tensors' own names."""
    return (*(loss_key(n) for n in losses), *tensor_logs)


class LossCollector:
    """Turns each ``compute_losses`` result into the sum to backpropagate and the detached values the meters keep.

    The contract is checked once per set of names, not every step; plain-float logged values are summed on the host
    (free), tensors stay on the device until a logging step reads the meters.
    """

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.progress_names: tuple[str, ...] = ()
        self._host_sums: dict[str, float] = {}
        self._host_sums_logged: dict[str, float] = {}
        self._checked_key: tuple[Any, ...] | None = None
        self._record_names: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def collect(self, output: Any) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
        """``(names, total, stacked)``: the components' sum to backpropagate and their detached fp32 values ``(K,)``
        (+ logged tensors) for the meters. Stacking detached values keeps the extra kernels out of the backward graph:
        with one component, backward runs exactly the graph of a hand-written loop."""
        losses, logs, progress = split_output(output, self.task_name)
        key = (tuple(losses), tuple(logs), tuple(progress))
        if key != self._checked_key:
            check_losses(losses, {**logs, **progress}, self.task_name)
            self._checked_key, self.progress_names = key, tuple(progress)
        values = list(losses.values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        tensor_logs: list[str] = []
        kept = [v.detach().float().reshape(1) for v in values]
        if logs or progress:  # nothing to merge on the common path (components only)
            for name, value in {**logs, **progress}.items():
                if isinstance(value, torch.Tensor):
                    tensor_logs.append(name)
                    kept.append(value.detach().float().reshape(1))
                else:  # plain floats: summed on the host, free
                    self._host_sums[name] = self._host_sums.get(name, 0.0) + float(value)
        # One fp32 component: a view, no kernel at all; several: one cat.
        stacked = kept[0] if len(kept) == 1 else torch.cat(kept)
        names_key = (key, *tensor_logs)
        names = self._record_names.get(names_key)
        if names is None:  # built once per set of names
            names = self._record_names[names_key] = record_names(losses, tensor_logs)
        return names, total, stacked

    def host_interval_sums(self) -> dict[str, float]:
        """The plain-float logged values summed since the previous call (one log interval)."""
        sums = {name: value - self._host_sums_logged.get(name, 0.0) for name, value in self._host_sums.items()}
        self._host_sums_logged = dict(self._host_sums)
        return sums
