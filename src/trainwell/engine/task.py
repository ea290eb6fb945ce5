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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

# The typed task:/data: sections live with the schema; a task imports them from here or from there.
from trainwell.config.schema import DataConfig, OptimConfig, ScheduleConfig, TaskConfig
from trainwell.engine.checkpoint.weights import ForeignWeights
from trainwell.records.findings import Finding

BaseDataConfig = DataConfig
"""The ``data:`` base section under a name ``Task``'s own ``DataConfig`` attribute does not shadow."""


class DataError(ValueError):
    """A dataset or input file a task reads is unusable: the message names the file, the record or line where there
    is one, and what is wrong. The CLI prints it without a traceback; a reader never reinterprets such a file
    silently."""


class MissingDataError(DataError, FileNotFoundError):
    """A file or folder a task's dataset needs is not there (still a ``FileNotFoundError`` for callers)."""


PerSample = torch.Tensor | list[torch.Tensor]
"""Per-sample results under one name: a tensor ``(N, ...)`` (one row per sample), or a list of ``N`` tensors of any
shapes (ragged: the boxes of each frame, the token ids of each caption). Both are gathered exactly once by index."""


@runtime_checkable
class Evaluator(Protocol):
    """Per-sample evaluation state the engine drives (Ignite-style ``reset / update / compute``).

    Results are kept *per dataset index* so that distributed evaluation can gather them and verify
    that every sample was scored exactly once before ``compute`` turns them into numbers.

    Lifecycle: ``Task.build_evaluator()`` is called once per evaluation, after ``build_datasets``; the engine calls
    ``reset()``, then ``eval_step`` feeds it batch by batch on every process, then ``local_results()`` on every
    process; on rank 0 only: ``load_results(all)`` with the gathered results sorted by index, ``compute()``, and
    ``save_outputs(dir)`` if the evaluator has it. References (ground truth that is not in the per-sample results,
    e.g. all captions of an image for CIDEr's document frequencies) are reached through the task, which built the
    validation set and can hand it to the evaluator it builds.
    """

    def reset(self) -> None: ...

    def local_results(self) -> tuple[torch.Tensor, dict[str, PerSample]]:
        """``(indices (N,), {name: PerSample})`` held by this process, in the same order as ``indices``."""
        ...

    def load_results(self, indices: torch.Tensor, results: dict[str, PerSample]) -> None:
        """Replace the held results by the gathered ones (sorted by index; ragged names stay lists)."""
        ...

    def compute(self) -> dict[str, float]: ...


@runtime_checkable
class WritesOutputs(Protocol):
    """Optional evaluator capability: prediction files in the benchmark's format (COCO ``captions.json``, KITTI
    result ``.txt`` files, FreiHAND/HO3D ``pred.json``), written after ``compute`` on rank 0 into the run's
    ``predictions/`` (or ``eval --export DIR``)."""

    def save_outputs(self, out_dir: Path) -> list[Path]:
        """Write the files into ``out_dir`` (it exists); return the paths written."""
        ...


@runtime_checkable
class ReportsFindings(Protocol):
    """Optional evaluator capability: what ``compute`` noticed about the predictions (empty or constant captions, a
    metric it could not compute and why), as findings; the engine hands them to the doctor and to ``eval --out``.
    Set ``findings`` in ``compute``; the engine reads it right after."""

    findings: list[Finding]


@dataclass
class LossOutput:
    """What ``Task.compute_losses`` may return instead of a plain ``{name: tensor}`` dict.

    Attributes:
        losses: *weighted* scalar components; the engine optimises their sum and logs each as ``loss/<name>``.
        logs: values to log but not to optimise (OpenPCDet's ``tb_dict`` extras, accuracies): scalar tensors or
            Python floats, logged as ``<name>`` at logging steps.
        progress: items for the progress bar and log line (OpenPCDet's ``disp_dict``), same types as ``logs``.

    Tensors stay on the device; the engine reads them only at logging steps (no host-device sync per step).
    """

    losses: Mapping[str, torch.Tensor]
    logs: Mapping[str, torch.Tensor | float] = field(default_factory=dict)
    progress: Mapping[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means, for log lines, ``best_metric`` defaults and the doctor's plausibility checks.

    Attributes:
        unit: printed after the value (``"mm"``, ``""``).
        higher_is_better: ``True`` for AP, CIDEr, PCK; ``False`` for errors.
        plausible: ``(low, high)`` a healthy run stays within (a hand's MPJPE below 1 000 mm); ``None``: no bound.
        description: one line on which protocol the value follows (``trainwell report`` shows it beside the metric's
            group, so that, e.g., a server's ``freihand/pa_mpjpe_mm`` is not read as the root-relative ``pa_mpjpe``).
    """

    unit: str = ""
    higher_is_better: bool = False
    plausible: tuple[float, float] | None = None
    description: str = ""


Batch = Any
"""Whatever the task's datasets collate to: usually a dict of tensors."""


class TaskCapabilityError(ValueError):
    """The config asks for something the task does not implement (the key and the missing method are named)."""


def require_capability(task: Task, method: str, needed_by: str) -> None:
    """Raise :class:`TaskCapabilityError` unless ``task`` overrides ``Task.<method>``, which ``needed_by`` (a config
    key or a command) needs: an optional hook is declared by overriding it, and checked before anything runs."""
    if getattr(type(task), method) is getattr(Task, method):
        name = type(task).__name__
        raise TaskCapabilityError(
            f"{needed_by} needs {name}.{method}(), which {name} does not implement: add it (docs/porting.md, "
            f"'Optional hooks') or do without {needed_by}."
        )


class Task:
    """Base class for tasks. Subclasses set ``Config``/``DataConfig`` and implement the methods.

    Lifecycle (on every process): ``__init__(cfg, data_cfg)``; ``run_dir`` is set (the run directory when the run
    writes outputs, the checkpoint's run directory for ``trainwell eval``/``predict``, else ``None``);
    ``build_datasets()`` once; ``build_model()`` once; ``build_optimizer`` / ``build_scheduler`` once (optional);
    ``on_epoch_start(epoch)`` before every training epoch (also the one a resumed run continues);
    ``compute_losses`` per micro-batch; ``build_evaluator()`` once per evaluation, then ``eval_step`` per batch.

    Attributes:
        cfg: the typed ``task:`` section (an instance of ``Config``).
        data_cfg: the typed ``data:`` section (an instance of ``DataConfig``).
        run_dir: where the run writes (tokenizers, vocabularies a task saves beside its checkpoints), or ``None``.
        num_epochs: the epochs the run will train (set once the plan is known, before the first ``on_epoch_start``;
            with ``train.max_steps`` it follows from the budget), or ``None`` outside training.
    """

    Config: ClassVar[type[TaskConfig]] = TaskConfig
    DataConfig: ClassVar[type[BaseDataConfig]] = BaseDataConfig

    def __init__(self, cfg: TaskConfig, data_cfg: BaseDataConfig) -> None:
        self.cfg = cfg
        self.data_cfg = data_cfg
        self.run_dir: Path | None = None
        self.num_epochs: int | None = None

    # -- construction -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Return the model (on CPU; the engine moves it to the device)."""
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any]]:
        """Return ``(train_dataset, val_dataset)``; both map-style with ``__len__``."""
        raise NotImplementedError

    def build_val_dataset(self) -> Dataset[Any]:
        """The validation set alone (``trainwell eval``); override when building the training set is costly."""
        return self.build_datasets()[1]

    def build_evaluator(self) -> Evaluator:
        """Return a fresh evaluator (e.g. :class:`trainwell.metrics.PoseAccumulator`)."""
        raise NotImplementedError

    def build_test_dataset(self) -> Dataset[Any]:
        """The test split, scored only by ``trainwell test`` (never during training, never to choose ``best.pt``).
        A task without one keeps this default: ``trainwell test`` then says so."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no test split: implement {type(self).__name__}.build_test_dataset() "
            "(docs/porting.md), or score a held-out set with `trainwell eval` by pointing the validation data at it."
        )

    def build_test_evaluator(self, dataset: Dataset[Any]) -> Evaluator:
        """A fresh evaluator for the test split ``dataset``. Default: :meth:`build_evaluator`; override it when the
        evaluator reads its references from the dataset it scores (detection labels, caption references)."""
        return self.build_evaluator()

    # -- per batch ----------------------------------------------------------------------------
    def compute_losses(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor] | LossOutput:
        """Run the model on a training batch and return *weighted* scalar loss components.

        The engine optimises their sum and logs each by name. Return tensors, never floats:
        turning a loss into a Python number forces a host-device sync every step. Return a
        :class:`LossOutput` to add logged-only values and progress-bar items.

        Runs under ``torch.autocast`` when ``train.amp`` is on. To compute a loss in fp32 (as ViECap's
        cross-entropy), wrap it in ``with trainwell.engine.amp.full_precision():`` and cast the logits ``.float()``.
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

    def metric_specs(self) -> dict[str, MetricSpec]:
        """Unit, direction and plausible range of each metric (the doctor flags values outside the range)."""
        return {name: MetricSpec(unit=unit) for name, unit in self.metric_units().items()}

    def metric_names(self) -> set[str] | None:
        """Every name the evaluator's ``compute()`` returns for this config, known before any data is read.

        ``eval.best_metric`` is checked against these names before training starts (a typo would otherwise fail at
        the first evaluation, possibly hours in). ``None`` (the default): not declared, the check is skipped.
        """
        return None

    def check_batch(self, batch: Batch) -> list[Finding]:
        """Task-specific sanity checks on an early training batch (the training doctor calls this).

        Returns a list of :class:`trainwell.doctor.Finding` (empty when healthy).
        """
        return []

    def build_optimizer(self, model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer | None:
        """A custom optimizer; ``None`` (the default) builds the ``optim:`` one. Saved and resumed as usual."""
        return None

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, total_steps: int, cfg: ScheduleConfig
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A custom LR scheduler stepped once per applied optimizer step; ``None`` builds the ``schedule:`` one."""
        return None

    def shard_units(self, model: nn.Module) -> Sequence[nn.Module] | None:
        """Under ``distributed.strategy=fsdp``: the modules to shard as units (e.g. each transformer block), innermost
        or not; the root is sharded last. ``None`` (the default): ``distributed.fsdp.units``, else every direct child
        with parameters. ``distributed.fsdp.units``, when set, takes precedence."""
        return None

    def build_batch_sampler(
        self, dataset: Dataset[Any], batch_size: int, epoch: int, seed: int
    ) -> Sequence[list[int]] | None:
        """The *global* training batches of ``epoch`` (e.g. length buckets); ``None`` = shuffled fixed-size batches.

        Must be a pure function of its arguments (a resumed run calls it again and skips the batches done).
        The engine deals batch ``i`` to process ``i % world_size`` and drops a tail that would leave some
        processes without a batch (say so in the log), so every process takes the same number of steps.
        """
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Called before every training epoch (0-based), also the one a resumed run continues (e.g. to switch
        augmentation off for the last epochs, as OpenPCDet's ``DisableAugmentationHook``). With ``data.num_workers``
        > 0 and persistent workers, change dataset state only through what ``__getitem__`` reads from the epoch."""

    def set_augmentation(self, enabled: bool) -> None:
        """Switch the training set's augmentation on or off. Called before :meth:`on_epoch_start` of every epoch when
        ``data.disable_augmentation_last_epochs`` is set (OpenPCDet's ``NUM_LAST_EPOCHS``); a task that does not
        override it cannot use that key (a config error at startup, not a silent no-op)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement set_augmentation(); "
            "data.disable_augmentation_last_epochs needs it."
        )

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> Any:
        """``trainwell predict``: run the model (in eval mode, under no_grad) on the inputs of one file and return
        a JSON-serialisable result (printed and written to ``out_dir/predictions.json``). The task may write its own
        formats into ``out_dir`` too (KITTI result text, FreiHAND ``pred.json``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict(); `trainwell predict` needs it.")

    def foreign_weights(self, payload: dict[str, Any]) -> ForeignWeights | None:
        """``--init-from``: this model's state dict from a checkpoint container another codebase wrote (e.g.
        OpenPCDet's ``{"model_state": …, "epoch": …}``), or ``None`` (the default) when ``payload`` is not one the
        task reads. The engine then matches the keys as for its own checkpoints and names the container in errors."""
        return None

    def debug_losses(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Loss internals for ``diagnostics.debug_loss`` (statistics of predictions, targets, elements)."""
        return {}


__all__ = [
    "Batch",
    "DataConfig",
    "DataError",
    "Evaluator",
    "LossOutput",
    "MetricSpec",
    "MissingDataError",
    "PerSample",
    "Task",
    "TaskConfig",
]
