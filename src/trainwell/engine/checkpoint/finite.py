"""A checkpoint is written only from a finite state: the check the loop runs before every save.

Saves are rare (epoch ends, ``checkpoint.latest_every``, signals), so one host sync there is cheap; nothing is
checked per step. The check reduces every floating tensor of the model, the optimizer state and the loss meter
to its 2-norm (``torch._foreach_norm``: one fused kernel per device and dtype; NaN and Inf propagate), reads the
flags once, and confirms any tensor it flags with the max-norm (a sum of squares can overflow; a maximum cannot).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.engine.distributed import DistEnv, all_reduce_mean
from trainwell.engine.fsdp import local_value
from trainwell.engine.nonfinite import NonFiniteLossError, NonFinitePolicy
from trainwell.records.findings import Finding


def state_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer, meter_tensors: Iterable[torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every floating tensor a checkpoint would hold of the model, optimizer and loss sums.

    Sharded (FSDP) tensors are given as this process's shard: every process checks its own, and the verdict is
    reduced over the processes (:func:`refuse_nonfinite_state`), so together they check every element once.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    for name, tensor in model.state_dict().items():
        yield f"model.{name}", local_value(tensor)
    for param, state in optimizer.state.items():
        owner = names.get(id(param), "a parameter outside the model")
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                yield f"optimizer state '{key}' of {owner}", local_value(value)
    for i, tensor in enumerate(meter_tensors):
        yield f"loss sums ({i})", tensor


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors holding a NaN or an Inf (one host sync when all are finite)."""
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in named:
        if tensor.is_floating_point() and tensor.numel():
            groups.setdefault((tensor.device, tensor.dtype), []).append((name, tensor.detach()))
    members = [member for group in groups.values() for member in group]
    if not members:
        return []
    # The 2-norm is one fused, vectorised kernel (17x faster than the max-norm on a CPU); it is finite exactly when
    # every element is, unless the sum of squares overflows. Tensors it flags are confirmed with the max-norm.
    suspects = [m for m, ok in zip(members, _finite_norms(groups, 2.0), strict=True) if not ok]
    if not suspects:
        return []
    confirmed = _finite_norms(_grouped(suspects), math.inf)  # only when something looks wrong: a second sync
    return [name for (name, _), ok in zip(suspects, confirmed, strict=True) if not ok]


def _grouped(
    members: list[tuple[str, torch.Tensor]],
) -> dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]]:
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in members:
        groups.setdefault((tensor.device, tensor.dtype), []).append((name, tensor))
    return groups


def _finite_norms(groups: dict[Any, list[tuple[str, torch.Tensor]]], order: float) -> list[bool]:
    """Whether each tensor's ``order``-norm is finite, in group order (one host sync)."""
    flags = [
        torch.isfinite(torch.stack(torch._foreach_norm([t for _, t in members], order))).cpu()
        for members in groups.values()
    ]
    return torch.cat(flags).tolist()  # host sync: once per checkpoint


def nonfinite_state_error(
    bad: list[str], step: int, last_good: Path | None, last_good_step: int | None, cause: str | None
) -> NonFiniteLossError:
    """The error that stops a run instead of saving a non-finite state; it names the tensors and the newest good
    checkpoint, which stays as it was."""
    shown = ", ".join(bad[:3]) + (f" … ({len(bad)} tensors)" if len(bad) > 3 else "")
    what = "" if not cause else cause + (" " if cause.endswith((".", ".)")) else ". ")
    if last_good is not None:
        at = f" (step {last_good_step})" if last_good_step is not None else ""
        kept = (
            f"The newest checkpoint, '{last_good}'{at}, holds the last finite state and was kept: fix the cause "
            f"(learning rate, loss), then continue from it with: trainwell train CONFIG "
            f"run.dir={last_good.parent.parent} --resume auto."
        )
    else:
        kept = "No checkpoint had been written yet; fix the cause (learning rate, loss) and start again."
    finding = Finding(
        "train.nonfinite",
        "error",
        "The training state became non-finite; it was not checkpointed",
        f"at step {step}, non-finite values in {shown}",
        "Lower the learning rate, clip gradients (train.clip_grad_norm) or fix the loss; "
        "diagnostics.nonfinite=skip skips non-finite steps.",
        step,
    )
    return NonFiniteLossError(
        f"{what}Training stopped at step {step}: non-finite values in {shown}, so this state was not saved. {kept}",
        finding,
    )


def refuse_nonfinite_state(
    named: Iterable[tuple[str, torch.Tensor]],
    *,
    env: DistEnv,
    nonfinite: NonFinitePolicy,
    step: int,
    last: Path,
    last_saved_step: int | None,
) -> None:
    """Before a checkpoint: stop the run rather than save NaN/Inf (model, optimizer state, loss sums in ``named``).

    One fused check and one host sync per save (never per step); every process learns the verdict (one all-reduce:
    the loss sums differ between processes).

    Raises:
        NonFiniteLossError: naming the tensors and the newest good checkpoint (``last``, kept as it was).
    """
    bad = nonfinite_names(named)
    flag = torch.tensor([float(len(bad))], dtype=torch.float64)
    if not float(all_reduce_mean(flag, env)[0]):
        return
    cause: NonFiniteLossError | None = None
    if any(name.startswith("loss sums") for name in bad):
        try:  # the non-finite policy names the first bad step and saves its batch, when it kept the losses
            nonfinite.check([math.nan], None, step, describe=env.is_main)
        except NonFiniteLossError as err:
            cause = err
    error = nonfinite_state_error(
        bad or ["another process's state"],
        step,
        last if last.exists() else None,
        last_saved_step,
        str(cause) if cause else None,
    )
    nonfinite.finding = (cause.finding if cause else None) or error.finding
    raise error
