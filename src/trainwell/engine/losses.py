"""The loss contract: what ``Task.compute_losses`` may return, checked once per set of names, with one clear error.

A component is a *weighted scalar floating tensor that requires grad* (the engine sums and backpropagates them);
logged-only values and progress-bar items (``LossOutput.logs`` / ``.progress``) are scalar tensors or floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainwell.doctor.checks import loss_key
from trainwell.engine.task import LossOutput


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
