"""A checkpoint is written only from a finite state: the check the loop runs before every save.

Saves are rare (epoch ends, ``checkpoint.latest_every``, signals), so one host sync there is cheap; nothing is
checked per step. The check reduces every floating tensor of the model, the optimizer state and the loss meter
to its largest magnitude (``torch._foreach_norm`` with ``ord=inf``: one fused kernel per device and dtype, no
overflow of a sum of squares, and NaN propagates), then reads the flags once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from trainwell.doctor.findings import Finding
from trainwell.engine.nonfinite import NonFiniteLossError


def state_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer, meter_tensors: Iterable[torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every floating tensor a checkpoint would hold of the model, optimizer and loss sums."""
    names = {id(p): name for name, p in model.named_parameters()}
    for name, tensor in model.state_dict().items():
        yield f"model.{name}", tensor
    for param, state in optimizer.state.items():
        owner = names.get(id(param), "a parameter outside the model")
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                yield f"optimizer state '{key}' of {owner}", value
    for i, tensor in enumerate(meter_tensors):
        yield f"loss sums ({i})", tensor


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors holding a NaN or an Inf (one host sync for all of them)."""
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in named:
        if tensor.is_floating_point() and tensor.numel():
            groups.setdefault((tensor.device, tensor.dtype), []).append((name, tensor.detach()))
    names: list[str] = []
    flags: list[torch.Tensor] = []
    for members in groups.values():
        peaks = torch._foreach_norm([t for _, t in members], math.inf)  # max |x|; NaN stays NaN
        flags.append(torch.isfinite(torch.stack(peaks)).cpu())
        names.extend(name for name, _ in members)
    if not flags:
        return []
    finite = torch.cat(flags).tolist()  # host sync: once per checkpoint
    return [name for name, ok in zip(names, finite, strict=True) if not ok]


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
