"""Model weights alone: ``--init-from`` (fine-tuning), ``trainwell eval``/``predict``, and ``trainwell export``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.engine.checkpoint.files import CheckpointError, atomic_write, atomic_write_text, load_checkpoint
from trainwell.engine.checkpoint.sharded import is_sharded_checkpoint, read_model_weights
from trainwell.engine.fsdp import load_full_model_state


@dataclass
class ForeignWeights:
    """A model state dict read from a checkpoint container that another codebase wrote (``--init-from``)."""

    state: dict[str, torch.Tensor]
    """Already in this model's key names."""
    container: str
    """What the file was, for messages: e.g. "an OpenPCDet checkpoint (model_state, epoch 80, version pcdet+0.6.0)"."""


ForeignReader = Callable[[dict[str, Any]], "ForeignWeights | None"]
"""A task's reader of foreign containers (:meth:`trainwell.engine.task.Task.foreign_weights`): ``None`` when the
loaded payload is not a container it knows."""


@dataclass
class WeightsReport:
    """How a checkpoint's model tensors matched a model."""

    path: Path
    container: str | None = None
    """A foreign container's description (``None`` for a trainwell checkpoint or a plain state dict)."""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """In the model, not in the checkpoint (kept as initialised)."""
    unexpected: list[str] = field(default_factory=list)
    """In the checkpoint, not in the model (ignored)."""
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """``(name, checkpoint shape, model shape)`` (kept as initialised)."""

    @property
    def is_exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        def names(items: list[str]) -> str:
            more = f" … and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        found = f" ({self.container})" if self.container else ""
        parts = [f"{len(self.loaded)} of {total} model tensors loaded from '{self.path}'{found}"]
        if self.missing:
            parts.append(f"missing in the checkpoint: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected (not in the model): {names(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{n} (checkpoint {tuple(a)} vs model {tuple(b)})" for n, a, b in self.mismatched]
            parts.append(f"shape mismatch: {names(shapes)}")
        return "; ".join(parts)


def model_state_of(payload: dict[str, Any], path: Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict in a trainwell checkpoint (``payload["model"]``) or a plain state dict.

    ``ema``: the weights' moving average instead (``payload["ema"]["model"]``, written under ``train.ema``).
    """
    if ema:
        payload = _ema_payload(payload, path)
    state = payload.get("model") if isinstance(payload.get("model"), dict) else payload
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        top = ", ".join(str(k) for k in list(payload)[:8])
        raise CheckpointError(
            f"'{path}' holds neither a trainwell checkpoint nor a model state dict (a dict of tensors), nor a "
            f"checkpoint container the task reads; its top-level keys: {top}."
        )
    keys = list(state)
    if all(k.startswith("module.") for k in keys):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _ema_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    part = payload.get("ema")
    if not isinstance(part, dict) or part.get("started_at") is None:
        why = "without train.ema" if not isinstance(part, dict) else "before train.ema.start_step"
        raise CheckpointError(
            f"'{path}' holds no EMA weights (it was written {why}). Use the trained weights (no --ema; "
            f"eval.use_ema=false), or a checkpoint of a run with train.ema written after its start_step."
        )
    return part


def compare_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> WeightsReport:
    """How the tensors of ``state`` match ``model``'s: loadable, missing, unexpected, differently shaped."""
    own = model.state_dict()
    report = WeightsReport(path=path)
    for name, tensor in own.items():
        if name not in state:
            report.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            report.mismatched.append((name, tuple(state[name].shape), tuple(tensor.shape)))
        else:
            report.loaded.append(name)
    report.unexpected = [name for name in state if name not in own]
    return report


def read_for_export(path: str | Path) -> dict[str, Any]:
    """A checkpoint to export (verified): a file's whole payload, or a sharded directory's metadata with its model
    consolidated into one state dict (its optimizer state stays in the shards)."""
    return _load_any(Path(path), "cpu", require_checksum=True)


def _load_any(path: Path, map_location: str | torch.device, *, require_checksum: bool) -> dict[str, Any]:
    """A checkpoint file, or a sharded directory (verified) with its whole model in one state dict."""
    if is_sharded_checkpoint(path):
        return read_model_weights(path)
    return load_checkpoint(path, map_location=map_location, require_checksum=require_checksum)


def load_model_weights(
    model: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    foreign: ForeignReader | None = None,
    ema: bool = False,
) -> WeightsReport:
    """Copy the matching tensors of a checkpoint (or a plain state dict) into ``model`` (``ema``: its EMA weights).

    ``foreign`` (the task's :meth:`~trainwell.engine.task.Task.foreign_weights`) is asked first, so a task can read
    the checkpoint container of the codebase its model comes from; the file is loaded with ``weights_only=True``
    either way.

    Raises:
        CheckpointError: with ``strict``, if any key is missing, unexpected or has another shape
            (nothing is loaded then); also every error of :func:`load_checkpoint`.
    """
    path = Path(path)
    payload = _load_any(path, map_location, require_checksum=False)
    found = foreign(payload) if foreign is not None and not ema else None
    state = found.state if found is not None else model_state_of(payload, path, ema=ema)
    report = compare_model_state(model, state, path)
    report.container = found.container if found is not None else None
    matched = {name: state[name] for name in report.loaded}
    if strict and not report.is_exact:
        config = payload.get("config") if isinstance(payload, dict) else None
        task = config.get("task", {}).get("class_path") if isinstance(config, dict) else None
        written = f" It was written by a run of task {task}." if isinstance(task, str) else ""
        raise CheckpointError(
            f"The weights in '{path}' do not match the model: {report.describe()}.{written} Fix the model config, or "
            f"load only the matching tensors (trainwell train … --init-from-non-strict)."
        )
    load_full_model_state(model, matched, strict=False)  # an FSDP-sharded model takes its slice of each tensor
    return report


def export_weights(checkpoint: str | Path, out: str | Path, *, ema: bool = False) -> list[Path]:
    """Write a checkpoint's model weights (``ema``: their moving average) as a plain state dict, plus a sidecar
    ``<out>.json``.

    ``.safetensors`` (the ``safetensors`` format: no pickle at all) or ``.pt`` (``torch.save`` of a dict of
    tensors: ``torch.load(f, weights_only=True)`` → ``model.load_state_dict``). The sidecar holds the run's
    config, last metrics and library versions, so the file is usable without trainwell.

    Raises:
        CheckpointError: unreadable checkpoint, or an output name that is neither ``.pt`` nor ``.safetensors``.
    """
    source, target = Path(checkpoint), Path(out)
    payload = read_for_export(source)  # a sharded directory is consolidated into one state dict here
    weights = model_state_of(payload, source, ema=ema)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    if target.suffix == ".safetensors":
        from safetensors.torch import save as safetensors_bytes

        # Tied weights (one storage under two names) must be separate tensors in safetensors.
        unique = {name: tensor.clone() for name, tensor in state.items()}
        blob = safetensors_bytes(unique, metadata={"format": "pt", "exported_from": str(source)})
        atomic_write(target, lambda handle: handle.write(blob))
    elif target.suffix == ".pt":
        atomic_write(target, lambda handle: torch.save(state, handle))
    else:
        raise CheckpointError(f"--out '{target}': use a .safetensors or .pt file name.")
    sidecar = target.with_name(target.name + ".json")
    meta: dict[str, Any] = {
        "exported_from": str(source),
        "format": target.suffix.lstrip("."),
        "weights": "ema" if ema else "model",
        "num_tensors": len(state),
        "num_parameters": int(sum(t.numel() for t in state.values())),
        "train_state": _plain(payload.get("train_state", {})),
        "metrics": _plain(payload.get("train_state", {}).get("last_metrics", payload.get("metrics", {}))),
        "config": _plain(payload.get("config", {})),
        "versions": _plain(payload.get("versions", {})),
    }
    atomic_write_text(sidecar, json.dumps(meta, indent=2, default=str) + "\n")
    return [target, sidecar]


def _plain(obj: Any) -> Any:
    """JSON-friendly copy (tensors become lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
