"""The task interface: what a user writes to put their model on trainwell.

A task builds the model and the datasets, turns a batch into *named loss components*, and scores
predictions. It never calls ``backward()`` or ``optimizer.step()``: models predict, the engine
optimises. The engine imports no task; the YAML names one by import path (``task.class_path``).

How the codebases trainwell replaces map onto it:

* **UTNet-style hand pose** (RGB-D in, 21 joints out): ``compute_losses`` returns
  ``{"joint_3d": w1 * l1, "keypoint_2d": w2 * l2, "vertex": ..., "pose_prior": ..., "aux": ...}``
  (already weighted); the engine sums, logs each one, and ``build_evaluator`` returns a
  :class:`trainwell.metrics.PoseAccumulator` fed by ``eval_step``.
* **ViECap-style captioning** (prefix LM, AMP, warmup, token cross-entropy): ``compute_losses``
  returns ``{"token_ce": F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), ignore_index=pad)}``;
  AMP and warmup are engine settings (``train.amp=bf16``, ``schedule.warmup_steps``), not task code.
* **OpenPCDet-style detection** whose forward returns ``(loss, tb_dict, disp_dict)``:
  ``compute_losses`` calls the model and returns the summable parts of ``tb_dict``
  (``{"loss_rpn": tb["loss_rpn"], "loss_rcnn": tb["loss_rcnn"]}``) so that their sum is ``loss``;
  iteration budgets map to ``train.max_steps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class TaskConfig:
    """The ``task:`` section. A task subclasses this with its own typed keys."""

    class_path: str = "???"
    """Import path of the task class, ``package.module:ClassName``."""


@dataclass
class DataConfig:
    """The ``data:`` section. A task may subclass this to add its own keys (sizes, paths, seeds)."""

    num_workers: int = 0
    """DataLoader worker processes per training process (0 = load in the main process)."""
    pin_memory: bool = True
    """Pin host memory for faster host-to-GPU copies (ignored on CPU)."""
    persistent_workers: bool = True
    """Keep workers alive between epochs (only when num_workers > 0)."""


@runtime_checkable
class Evaluator(Protocol):
    """Per-sample evaluation state the engine drives (Ignite-style ``reset / update / compute``).

    Results are kept *per dataset index* so that distributed evaluation can gather them and verify
    that every sample was scored exactly once before ``compute`` turns them into numbers.
    """

    def reset(self) -> None: ...

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(indices (N,), {name: tensor (N, ...)})`` held by this process."""
        ...

    def load_results(self, indices: torch.Tensor, results: dict[str, torch.Tensor]) -> None:
        """Replace the held results by the gathered ones (sorted by index)."""
        ...

    def compute(self) -> dict[str, float]: ...


Batch = Any
"""Whatever the task's datasets collate to: usually a dict of tensors."""


class Task:
    """Base class for tasks. Subclasses set ``Config``/``DataConfig`` and implement the methods.

    Attributes:
        cfg: the typed ``task:`` section (an instance of ``Config``).
        data_cfg: the typed ``data:`` section (an instance of ``DataConfig``).
    """

    Config: ClassVar[type[TaskConfig]] = TaskConfig
    DataConfig: ClassVar[type[DataConfig]] = DataConfig

    def __init__(self, cfg: TaskConfig, data_cfg: DataConfig) -> None:
        self.cfg = cfg
        self.data_cfg = data_cfg

    # -- construction -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Return the model (on CPU; the engine moves it to the device)."""
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """Return ``(train_dataset, val_dataset)``; both map-style with ``__len__``."""
        raise NotImplementedError

    def build_evaluator(self) -> Evaluator:
        """Return a fresh evaluator (e.g. :class:`trainwell.metrics.PoseAccumulator`)."""
        raise NotImplementedError

    # -- per batch ----------------------------------------------------------------------------
    def compute_losses(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Run the model on a training batch and return *weighted* scalar loss components.

        The engine optimises their sum and logs each by name. Return tensors, never floats:
        turning a loss into a Python number forces a host-device sync every step.
        """
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Batch, indices: torch.Tensor, evaluator: Evaluator) -> None:
        """Predict on a validation batch and feed the evaluator; ``indices`` are dataset indices (B,)."""
        raise NotImplementedError

    # -- optional -----------------------------------------------------------------------------
    def collate_fn(self) -> Any:
        """A DataLoader ``collate_fn``; ``None`` means PyTorch's default collation."""
        return None

    def metric_units(self) -> dict[str, str]:
        """Units to print after metric values, e.g. ``{"mpjpe": "mm"}``."""
        return {}

    def check_batch(self, batch: Batch) -> list[Any]:
        """Task-specific sanity checks on an early training batch (the training doctor calls this).

        Returns a list of :class:`trainwell.engine.diagnostics.Finding` (empty when healthy).
        """
        return []

    def debug_losses(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Loss internals for ``diagnostics.debug_loss`` (statistics of predictions, targets, elements)."""
        return {}
