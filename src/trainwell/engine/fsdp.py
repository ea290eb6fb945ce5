"""``distributed.strategy: fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) and the few places where sharded
parameters (DTensors) need the engine's care.

* which modules become units (:func:`select_units`), ``train.amp`` as FSDP2's ``MixedPrecisionPolicy``
  (:func:`shard_model`);
* gradient accumulation without communication (:func:`gradient_sync_paused`, DDP's ``no_sync`` for DDP);
* evaluation without collectives inside the loop (:func:`gathered_parameters`: the whole model everywhere first);
* norms that are global (:func:`full_value`) and checks that look at this process's shard (:func:`local_value`);
* loading a full state dict into a sharded model (:func:`load_full_model_state`); the checkpoint parts of a sharded
  model are in ``engine/checkpoint/parts.py``.

Nothing here shards by hand: the sharding, gathers and reduce-scatters are FSDP2's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor

from trainwell.config.distributed import FsdpConfig


class ShardingError(ValueError):
    """The FSDP units cannot be chosen as configured (``distributed.fsdp.units``, ``Task.shard_units``)."""


UnitChooser = Callable[[nn.Module], Sequence[nn.Module]]
"""``model → the modules to shard as units`` (the root is always sharded last)."""


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` (or a module in it) is under FSDP2: its forwards then gather parameters (collectives)."""
    return any(isinstance(module, FSDPModule) for module in model.modules())


def select_units(model: nn.Module, patterns: Sequence[str] | None) -> list[nn.Module]:
    """The modules whose names match one of ``patterns`` (``fnmatch``); ``None``: every direct child with parameters.

    Raises:
        ShardingError: the patterns match no module (naming a few of the model's module names).
    """
    if patterns is None:
        return [child for child in model.children() if any(True for _ in child.parameters())]
    named = [(name, module) for name, module in model.named_modules() if name]
    units = [module for name, module in named if any(fnmatch(name, p) for p in patterns)]
    if not units:
        sample = ", ".join(name for name, _ in named[:8]) or "(none: the model has no submodules)"
        raise ShardingError(
            f"distributed.fsdp.units {list(patterns)} matches no module of the model; its module names begin: "
            f"{sample}. Fix the patterns (fnmatch, e.g. 'blocks.*'), or set distributed.fsdp.units=null."
        )
    return units


def shard_model(
    model: nn.Module, units: Sequence[nn.Module], cfg: FsdpConfig, amp: torch.dtype | None, device: torch.device
) -> nn.Module:
    """``fully_shard`` every unit (innermost first, as FSDP2 requires), then the root; returns ``model`` (changed
    in place: its parameters become DTensors sharded over all processes, dim 0).

    ``amp`` (``train.amp``): parameters are gathered in that dtype for forward and backward, gradients are reduced
    in fp32 (a bf16 sum over many processes loses the small contributions). ``cfg.cpu_offload``: the shards, their
    gradients and the optimizer step live in host memory; each unit's shards are copied to ``device`` for its
    all-gather (pinned host memory when CUDA is there, for asynchronous copies).
    """
    names = {id(module): name for name, module in model.named_modules()}
    foreign = [type(unit).__name__ for unit in units if id(unit) not in names]
    if foreign:
        raise ShardingError(f"Task.shard_units returned modules that are not in the model: {', '.join(foreign)}.")
    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32) if amp else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cfg.cpu_offload else OffloadPolicy()
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    reshard = cfg.reshard_after_forward
    # Children before parents: a unit's parameters are those no inner unit took.
    for unit in sorted((u for u in units if u is not model), key=lambda u: -names[id(u)].count(".")):
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy, offload_policy=offload)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy, offload_policy=offload)
    return model


@contextlib.contextmanager
def gradient_sync_paused(model: nn.Module) -> Iterator[None]:
    """Around a micro-batch that does not end its accumulation group: no gradient communication.

    FSDP2: gradients accumulate unsharded and unreduced, and the parameters stay gathered after backward (the next
    micro-batch needs them again); the group's last backward reduce-scatters the sum. DDP: its ``no_sync``.
    """
    if not isinstance(model, FSDPModule):
        with model.no_sync():  # type: ignore[operator]
            yield
        return
    model.set_requires_gradient_sync(False)
    model.set_reshard_after_backward(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
        model.set_reshard_after_backward(True)


def _reshards_after_forward(module: FSDPModule) -> bool:
    group = module._get_fsdp_state()._fsdp_param_group  # FSDP2 has no public getter
    return group is not None and group.post_forward_mesh_info is not None


@contextlib.contextmanager
def gathered_parameters(model: nn.Module) -> Iterator[None]:
    """Every process holds all of ``model``'s parameters inside the block (a no-op for an unsharded model).

    Evaluation shards differ in size, so forwards inside it must run no collective: the gathers happen here, once,
    on every process together, and forwards inside do not free them. Costs one full copy of the parameters.
    """
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    if not units:
        yield
        return
    reshard = [_reshards_after_forward(unit) for unit in units]
    for unit in units:
        unit.unshard()  # collective: an all-gather per unit
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit, value in zip(units, reshard, strict=True):
            unit.set_reshard_after_forward(value, recurse=False)
            unit.reshard()


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor holding ``tensor``'s global value (a DTensor is gathered or its pending reduction done)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of ``tensor`` (its shard for a DTensor): for checks whose verdict is reduced afterwards."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def load_full_model_state(model: nn.Module, state: dict[str, Any], *, strict: bool) -> None:
    """Copy a full (unsharded) state dict into ``model``, sharded or not (``--init-from``)."""
    if is_sharded(model):
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))
    else:
        model.load_state_dict(state, strict=strict)
