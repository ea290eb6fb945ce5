"""The "after" of docs/porting.md: the same model, data and loss as handwritten_train.py, as a trainwell Task.

Run from this directory: ``PYTHONPATH=. trainwell train config.yaml`` (the YAML names this module by import path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from trainwell.engine.task import DataConfig, DataError, MetricSpec, Task, TaskConfig


def make_blobs(num: int, seed: int) -> TensorDataset:
    """Three Gaussian blobs in 2-D: ``(points (N, 2), labels (N,))``, a pure function of ``seed``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = torch.randint(0, 3, (num,), generator=g)
    points = centres[labels] + torch.randn(num, 2, generator=g)
    return TensorDataset(points, labels)


class BlobSamples(Dataset):
    """``{"points": (2,), "label": ()}`` samples: the engine's default collate stacks them into a batch dict."""

    def __init__(self, data: TensorDataset) -> None:
        self.points, self.labels = data.tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"points": self.points[index], "label": self.labels[index]}


class AccuracyEvaluator:
    """Per-sample correctness keyed by dataset index: the engine gathers every process's samples, checks that each
    validation sample was scored exactly once, then calls ``compute`` on rank 0."""

    def reset(self) -> None:
        self.indices: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        self.indices.append(indices.cpu())
        self.correct.append((logits.argmax(dim=1) == labels).double().cpu())

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.cat(self.indices), {"correct": torch.cat(self.correct)}

    def load_results(self, indices: torch.Tensor, results: dict[str, torch.Tensor]) -> None:
        self.indices, self.correct = [indices], [results["correct"]]

    def compute(self) -> dict[str, float]:
        return {"accuracy": float(torch.cat(self.correct).mean())}


@dataclass
class BlobsConfig(TaskConfig):
    """``task:`` — the model's width."""

    class_path: str = "blobs_task:BlobsTask"
    hidden: int = 32


@dataclass
class BlobsDataConfig(DataConfig):
    """``data:`` — sizes and seeds of the two splits."""

    train_size: int = 512
    val_size: int = 128


class BlobsTask(Task):
    """The port: model, data, named loss, evaluation and predict; the engine runs the loop."""

    Config = BlobsConfig
    DataConfig = BlobsDataConfig
    cfg: BlobsConfig
    data_cfg: BlobsDataConfig

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, self.cfg.hidden), nn.ReLU(), nn.Linear(self.cfg.hidden, 3))

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.data_cfg
        return BlobSamples(make_blobs(d.train_size, seed=1)), BlobSamples(make_blobs(d.val_size, seed=2))

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"ce": nn.functional.cross_entropy(model(batch["points"]), batch["label"])}

    def build_evaluator(self) -> AccuracyEvaluator:
        return AccuracyEvaluator()

    def eval_step(self, model: nn.Module, batch: Any, indices: torch.Tensor, evaluator: Any) -> None:
        evaluator.update(model(batch["points"]), batch["label"], indices)  # under torch.no_grad(), model.eval()

    def metric_specs(self) -> dict[str, MetricSpec]:
        return {"accuracy": MetricSpec("", higher_is_better=True, plausible=(0.0, 1.0))}

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> list[int]:
        """A JSON list of ``[x, y]`` points → their predicted classes."""
        try:
            points = torch.tensor(json.loads(input_path.read_text()), dtype=torch.float32)
        except (ValueError, TypeError) as err:
            raise DataError(f"{input_path}: expected a JSON list of [x, y] points ({err}).") from None
        if points.dim() != 2 or points.shape[1] != 2:
            raise DataError(f"{input_path}: expected a list of [x, y] points, got shape {tuple(points.shape)}.")
        return model(points).argmax(dim=1).tolist()
