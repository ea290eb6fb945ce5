"""The model and the optimizer as checkpoint parts when plain ``state_dict()`` will not do: a model sharded by FSDP
(its state dict holds DTensors), or a checkpoint written in shards (``checkpoint.format: sharded``).

Two forms, one layout for the optimizer:

* ``full``: the whole state, gathered on rank 0 in CPU memory (other processes get ``{}``: only rank 0 writes a
  single-file checkpoint);
* sharded (``full=False``): each process's own shards (DTensors under FSDP; plain tensors under DDP, which
  ``torch.distributed.checkpoint`` writes once), for ``torch.distributed.checkpoint`` (``sharded.py``).

A full optimizer state is handed out in ``torch.optim``'s own layout (keyed by the parameter's position in
``param_groups``), the layout a DDP checkpoint has; shards are keyed by parameter name (DCP's layout), and
``sharded.read_sharded`` hands them back by position. Loading takes ``torch.optim``'s layout, whole or in shards
(DTensor values), so any checkpoint resumes under either strategy and any world size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor


def _options(full: bool) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True) if full else StateDictOptions()


def _holds_shards(tree: Any) -> bool:
    if isinstance(tree, dict):
        return any(_holds_shards(value) for value in tree.values())
    return isinstance(tree, DTensor)


def parameter_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: position ``i`` is the key ``i`` of ``torch.optim``'s layout."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_by_position(state: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (``torch.distributed.checkpoint``'s) in ``torch.optim``'s layout."""
    index = {name: i for i, name in enumerate(order)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def optimizer_by_name(state: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_by_position`."""
    return {
        "state": {order[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]],
    }


class ModelState:
    """The model as a checkpoint part: its ``full`` state dict (gathered on rank 0), or this process's shards."""

    def __init__(self, model: nn.Module, *, full: bool) -> None:
        self.model = model
        self.full = full

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model, options=_options(self.full))  # collective under FSDP

    def load_state_dict(self, state: dict[str, Any]) -> None:
        options = StateDictOptions(full_state_dict=not _holds_shards(state), strict=True)
        set_model_state_dict(self.model, state, options=options)


class OptimizerState:
    """The optimizer as a checkpoint part, in ``torch.optim``'s layout (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, full: bool) -> None:
        self.model = model
        self.optimizer = optimizer
        self.full = full
        self.order = parameter_order(model, optimizer)

    def state_dict(self) -> dict[str, Any]:
        """``full``: ``torch.optim``'s layout (as a DDP checkpoint); shards: keyed by parameter name (DCP's own)."""
        state = get_optimizer_state_dict(self.model, self.optimizer, options=_options(self.full))  # collective
        return optimizer_by_position(state, self.order) if state and self.full else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        options = StateDictOptions(full_state_dict=not _holds_shards(state))
        set_optimizer_state_dict(self.model, self.optimizer, optimizer_by_name(state, self.order), options=options)
