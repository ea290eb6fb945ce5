"""OpenPCDet's checkpoint container, both ways: the key map and the ``checkpoint_epoch_N.pth`` file.

OpenPCDet's ``train_utils.checkpoint_state`` saves ``{"epoch", "it", "model_state", "optimizer_state", "version"}``;
``Detector3DTemplate.load_params_from_file`` (fine-tuning, test.py) reads ``model_state`` and loads the tensors whose
name and shape match; ``load_params_with_optimizer`` (resume) loads ``model_state`` strictly, then
``optimizer_state`` into its optimizer, and returns ``(it, epoch)``.

The key map: the pack's :class:`~trainwell.tasks.detection3d.model.PointPillars` is built with OpenPCDet's module
names (``vfe.pfn_layers.0.linear``, ``backbone_2d.blocks.0.1``, ``backbone_2d.deblocks.0.0``,
``dense_head.conv_cls``, …), so a key maps to itself; OpenPCDet's model has one tensor more, the detector's
``global_step`` buffer (its step counter), written from trainwell's step and dropped on reading.

The optimizer state is written in the layout of OpenPCDet's ``adam_onecycle`` optimizer (fastai's ``OptimWrapper``
over ``torch.optim.Adam``): two parameter groups, the parameters of every non-BatchNorm layer then those of every
BatchNorm layer, each in module order, weight decay 0 in the groups (OpenPCDet applies it outside Adam).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainwell.engine.checkpoint.files import CheckpointError, atomic_write
from trainwell.engine.checkpoint.weights import ForeignWeights, model_state_of, read_for_export

GLOBAL_STEP_KEY = "global_step"
"""``Detector3DTemplate``'s buffer: a ``LongTensor`` of shape ``(1,)`` holding the number of steps trained."""
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
VERSION = "trainwell-export"
"""The container's ``version`` (OpenPCDet writes ``pcdet+<version>`` and only logs it)."""
# torch.optim.Adam's group keys other than lr/betas/eps/weight_decay that OpenPCDet's optimizer has.
_ADAM_FLAGS = ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused")


def is_openpcdet_container(payload: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint is OpenPCDet's container (a ``model_state`` dict, no trainwell ``model``)."""
    return isinstance(payload.get("model_state"), dict) and "model" not in payload


def describe_container(payload: dict[str, Any]) -> str:
    """One line for messages: which keys the container holds, its epoch, iteration and version."""
    keys = ", ".join(str(k) for k in payload)
    details = [f"{name} {payload[name]}" for name in ("epoch", "it", "version") if payload.get(name) is not None]
    return f"an OpenPCDet checkpoint ({keys}; {', '.join(details) or 'no epoch/version'})"


def from_openpcdet_keys(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenPCDet ``model_state`` -> this pack's state dict: drop ``global_step``; ``module.`` prefixes of a model
    saved inside DistributedDataParallel are removed (OpenPCDet strips them itself when it saves)."""
    state = {}
    for key, tensor in model_state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name != GLOBAL_STEP_KEY:
            state[name] = tensor
    return state


def to_openpcdet_keys(state: dict[str, torch.Tensor], global_step: int) -> dict[str, torch.Tensor]:
    """This pack's state dict -> OpenPCDet ``model_state`` (same names, plus ``global_step``)."""
    model_state = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    model_state[GLOBAL_STEP_KEY] = torch.tensor([global_step], dtype=torch.int64)
    return model_state


def read_openpcdet(payload: dict[str, Any]) -> ForeignWeights | None:
    """``--init-from``: the model weights of an OpenPCDet container; ``None`` when ``payload`` is not one."""
    if not is_openpcdet_container(payload):
        return None
    model_state = payload["model_state"]
    if not all(isinstance(v, torch.Tensor) for v in model_state.values()):
        raise CheckpointError(f"{describe_container(payload)}: its model_state holds something else than tensors.")
    return ForeignWeights(state=from_openpcdet_keys(model_state), container=describe_container(payload))


def _param_names(state: dict[str, torch.Tensor]) -> list[str]:
    """Parameter names in module order (= ``named_parameters()``): the state dict's keys less the BN buffers."""
    return [name for name in state if name.rsplit(".", 1)[-1] not in BN_BUFFERS]


def _is_batchnorm_param(name: str, state: dict[str, torch.Tensor]) -> bool:
    return f"{name.rsplit('.', 1)[0]}.running_mean" in state


def to_openpcdet_optimizer(
    optimizer_state: dict[str, Any] | None, state: dict[str, torch.Tensor]
) -> tuple[dict[str, Any] | None, str]:
    """trainwell's Adam/AdamW state (one parameter group) -> OpenPCDet's ``adam_onecycle`` layout, and a note.

    ``None`` (OpenPCDet then starts its optimizer afresh) when there is no optimizer state, or it has several
    groups (their membership is not recorded in the checkpoint), or it is not Adam's (no ``exp_avg_sq``).
    """
    if not optimizer_state:
        return None, "no optimizer state in the checkpoint: optimizer_state is None"
    groups = optimizer_state["param_groups"]
    names = _param_names(state)
    if len(groups) != 1 or len(groups[0]["params"]) != len(names):
        return None, "several optimizer parameter groups (membership not recorded): optimizer_state is None"
    per_param = optimizer_state["state"]
    if any("exp_avg_sq" not in s for s in per_param.values()):
        return None, "not an Adam/AdamW optimizer: optimizer_state is None"
    by_name = {name: per_param.get(index) for name, index in zip(names, groups[0]["params"], strict=True)}
    plain = [n for n in names if not _is_batchnorm_param(n, state)]
    order, num_plain = plain + [n for n in names if _is_batchnorm_param(n, state)], len(plain)
    src = groups[0]
    hyper = {"lr": src["lr"], "betas": tuple(src["betas"]), "eps": src["eps"], "weight_decay": 0.0}
    hyper.update({flag: src[flag] for flag in _ADAM_FLAGS if flag in src})  # Adam fills in the ones left out
    new_state = {
        i: {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in by_name[n].items()}
        for i, n in enumerate(order)
        if by_name[n] is not None
    }
    param_groups = [
        {**hyper, "params": list(range(num_plain))},
        {**hyper, "params": list(range(num_plain, len(order)))},
    ]
    return {"state": new_state, "param_groups": param_groups}, "optimizer_state in adam_onecycle's two groups"


def export_openpcdet(checkpoint: str | Path, out: str | Path) -> tuple[list[Path], str]:
    """Write a trainwell checkpoint as OpenPCDet's ``checkpoint_epoch_N.pth`` container; the paths and a note.

    ``epoch`` is the number of finished epochs and ``it`` the number of optimizer steps, as OpenPCDet saves them.

    Raises:
        CheckpointError: unreadable checkpoint, not one of the detection pack, or an output name that is not
            ``.pth``/``.pt``.
    """
    source, target = Path(checkpoint), Path(out)
    if target.suffix not in (".pth", ".pt"):
        raise CheckpointError(f"--out '{target}': OpenPCDet's checkpoints are .pth files (checkpoint_epoch_N.pth).")
    payload = read_for_export(source)  # a file, or a sharded directory (its model consolidated)
    task_path = str(payload.get("config", {}).get("task", {}).get("class_path", ""))
    if not task_path.startswith("trainwell.tasks.detection3d"):
        raise CheckpointError(
            f"'{source}' is a checkpoint of task '{task_path or 'unknown'}'; --format openpcdet writes the detection "
            f"pack's PointPillars (trainwell.tasks.detection3d). Use --format plain for other models."
        )
    state = model_state_of(payload, source)
    train_state = payload.get("train_state", {})
    step = int(train_state.get("global_step", 0))
    optimizer_state, note = to_openpcdet_optimizer(payload.get("optimizer"), state)
    if source.is_dir():
        note = "a sharded checkpoint's optimizer state is not converted: optimizer_state is None"
    container = {
        "epoch": int(train_state.get("epoch", 0)),
        "it": step,
        "model_state": to_openpcdet_keys(state, step),
        "optimizer_state": optimizer_state,
        "version": VERSION,
    }
    atomic_write(target, lambda handle: torch.save(container, handle))
    return [target], note
