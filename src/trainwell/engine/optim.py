"""The optimizer of ``optim:``: parameter groups by name (own LR multiplier and weight decay), no decay on norms,
biases and embeddings, and group names for the logs (``Train/lr/<group>``)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainwell.config.schema import OptimConfig

_NO_DECAY_MODULES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding)


class OptimConfigError(ValueError):
    """``optim.param_groups`` does not fit the model (a pattern that matches nothing)."""


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _no_decay_names(model: nn.Module) -> set[str]:
    """Biases, and every parameter of normalisation and embedding layers."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, _NO_DECAY_MODULES) or param_name == "bias":
                names.add(full)
    return names


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Torch param-group dicts (with a ``name`` key) for the trainable parameters of ``model``.

    Each trainable parameter goes to the first ``optim.param_groups`` entry whose ``match`` fits its name, else
    to ``default``; with ``no_decay_norm_bias`` the biases / norm / embedding parameters of each group are split
    into ``<group>/no_decay`` (``no_decay`` for the default group) with weight decay 0.

    Raises:
        OptimConfigError: a pattern matches no trainable parameter (a typo would silently do nothing).
    """
    no_decay = _no_decay_names(model) if cfg.no_decay_norm_bias else set()
    buckets: dict[str, dict[str, Any]] = {}
    hits = [0] * len(cfg.param_groups)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, g in enumerate(cfg.param_groups) if _matches(g.match, name)), None)
        if index is None:
            group_name, lr_mult, decay = "default", 1.0, cfg.weight_decay
        else:
            hits[index] += 1
            spec = cfg.param_groups[index]
            group_name = spec.name or spec.match
            lr_mult = spec.lr_mult
            decay = cfg.weight_decay if spec.weight_decay is None else spec.weight_decay
        if name in no_decay:
            group_name, decay = ("no_decay" if group_name == "default" else f"{group_name}/no_decay"), 0.0
        bucket = buckets.setdefault(
            group_name, {"name": group_name, "params": [], "lr": cfg.lr * lr_mult, "weight_decay": decay}
        )
        bucket["params"].append(param)
    unused = [cfg.param_groups[i].match for i, n in enumerate(hits) if n == 0]
    if unused:
        sample = ", ".join(n for n, _ in list(model.named_parameters())[:5])
        raise OptimConfigError(
            f"optim.param_groups: pattern(s) {', '.join(repr(u) for u in unused)} match no trainable parameter. "
            f"Parameter names look like: {sample}, … (globs such as 'backbone.*', or 're:<regex>')."
        )
    if not buckets:
        raise OptimConfigError("The model has no trainable parameters (every requires_grad is False).")
    return list(buckets.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the trainable parameters, grouped as :func:`param_groups` says.

    On CUDA the multi-tensor (``foreach``) kernels are PyTorch's default; nothing to choose here.
    """
    groups = param_groups(model, cfg)
    if cfg.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        params = [p for g in groups for p in g["params"]]
        fused = cfg.fused if cfg.fused is not None else all(p.is_cuda and p.is_floating_point() for p in params)
        return cls(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps, fused=fused or None)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def group_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """A log name per param group (``name`` when the group has one, else ``group<i>``)."""
    return [str(g.get("name", f"group{i}")) for i, g in enumerate(optimizer.param_groups)]


@dataclass(frozen=True)
class GroupHyperparameters:
    """Each param group's LR and β1 (Adam) or momentum (SGD) at one moment, keyed by group name (host floats)."""

    lrs: dict[str, float]
    momenta: dict[str, float]

    def record(self, with_momentum: bool) -> dict[str, float]:
        """A train record's ``lr`` (first group's), ``lr/<group>`` when there are several groups, and the momentum
        entries when ``with_momentum`` (a schedule that moves β1 / momentum, as OneCycle does)."""
        record = {"lr": next(iter(self.lrs.values()))}
        if len(self.lrs) > 1:
            record.update({f"lr/{name}": lr for name, lr in self.lrs.items()})
        return {**record, **self.momentum_record()} if with_momentum else record

    def momentum_record(self) -> dict[str, float]:
        """``{"momentum": first group's}`` plus ``momentum/<group>`` for each group when there are several."""
        if not self.momenta:
            return {}
        record = {"momentum": next(iter(self.momenta.values()))}
        if len(self.momenta) > 1:
            record.update({f"momentum/{name}": value for name, value in self.momenta.items()})
        return record


def group_hyperparameters(optimizer: torch.optim.Optimizer, names: list[str]) -> GroupHyperparameters:
    """The LR and β1/momentum every group holds now: read *before* ``optimizer.step()``, the values that update uses
    (the scheduler steps after it and moves them on). Plain Python floats in the param groups: no device sync."""
    lrs: dict[str, float] = {}
    momenta: dict[str, float] = {}
    for name, group in zip(names, optimizer.param_groups, strict=True):
        lrs[name] = float(group["lr"])
        if "betas" in group:
            momenta[name] = float(group["betas"][0])
        elif "momentum" in group:
            momenta[name] = float(group["momentum"])
    return GroupHyperparameters(lrs, momenta)
