"""The smallest complete task: a noisy linear-regression problem and an MLP.

It is the template to copy when porting a model, and what the engine's own tests and the overhead
benchmark run (so they do not depend on the hand-pose pack). Every sample is a pure function of
``(data.seed, split, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.engine.task import DataConfig, MetricSpec, Task, TaskConfig


@dataclass
class RegressionTaskConfig(TaskConfig):
    """``task:`` section of the regression task."""

    class_path: str = "trainwell.tasks.regression:RegressionTask"
    hidden: int = 64
    """Width of the MLP's hidden layers."""
    dropout: float = 0.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"mse": 1.0, "l1": 0.0})
    """Weights of the named loss components; a zero weight drops the component."""


@dataclass
class RegressionDataConfig(DataConfig):
    """``data:`` section of the regression task."""

    train_size: int = 512
    val_size: int = 101
    test_size: int = 101
    """Samples of the test split (``trainwell test``; a stream of its own)."""
    in_features: int = 8
    out_features: int = 2
    noise: float = 0.01
    seed: int = 0


class RegressionDataset(Dataset):
    """``{"x": (in,), "y": (out,)}`` with ``y = W x + noise``; W is shared, samples depend on the split."""

    def __init__(self, cfg: RegressionDataConfig, split: str) -> None:
        size = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}[split]
        weights = torch.Generator().manual_seed(cfg.seed)
        w = torch.randn(cfg.out_features, cfg.in_features, generator=weights)
        split_id = {"train": 1, "val": 2, "test": 3}[split]  # test: seed * 2 + 3 never equals another split's
        samples = torch.Generator().manual_seed(cfg.seed * 2 + split_id + 1_000)
        self.x = torch.randn(size, cfg.in_features, generator=samples)
        self.y = self.x @ w.T + cfg.noise * torch.randn(size, cfg.out_features, generator=samples)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


class SquaredErrorEvaluator:
    """Per-sample squared error and absolute error, keyed by dataset index."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._indices: list[torch.Tensor] = []
        self._sq: list[torch.Tensor] = []
        self._abs: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        diff = (pred.double() - target.double()).detach()
        self._indices.append(indices.detach().cpu())
        self._sq.append(diff.pow(2).mean(dim=1).cpu())
        self._abs.append(diff.abs().mean(dim=1).cpu())

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self._indices:
            empty = torch.zeros(0, dtype=torch.float64)
            return torch.zeros(0, dtype=torch.int64), {"sq": empty, "abs": empty}
        return torch.cat(self._indices), {"sq": torch.cat(self._sq), "abs": torch.cat(self._abs)}

    def load_results(self, indices: torch.Tensor, results: dict[str, torch.Tensor]) -> None:
        self._indices, self._sq, self._abs = [indices], [results["sq"]], [results["abs"]]

    def compute(self) -> dict[str, float]:
        indices, results = self.local_results()
        if indices.numel() == 0:
            raise ValueError("SquaredErrorEvaluator.compute() called before any update().")
        return {"mse": float(results["sq"].mean()), "mae": float(results["abs"].mean())}


class RegressionTask(Task):
    """Regress ``y`` from ``x`` with a two-layer MLP; losses ``mse`` and (optionally) ``l1``."""

    Config = RegressionTaskConfig
    DataConfig = RegressionDataConfig
    cfg: RegressionTaskConfig
    data_cfg: RegressionDataConfig

    def build_model(self) -> nn.Module:
        d = self.data_cfg
        return nn.Sequential(
            nn.Linear(d.in_features, self.cfg.hidden),
            nn.ReLU(),
            nn.Dropout(self.cfg.dropout),
            nn.Linear(self.cfg.hidden, self.cfg.hidden),
            nn.ReLU(),
            nn.Linear(self.cfg.hidden, d.out_features),
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        return RegressionDataset(self.data_cfg, "train"), RegressionDataset(self.data_cfg, "val")

    def build_test_dataset(self) -> Dataset:
        return RegressionDataset(self.data_cfg, "test")

    def build_evaluator(self) -> SquaredErrorEvaluator:
        return SquaredErrorEvaluator()

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = model(batch["x"])
        weights = self.cfg.loss_weights
        losses = {}
        if weights.get("mse", 0.0):
            losses["mse"] = weights["mse"] * nn.functional.mse_loss(pred, batch["y"])
        if weights.get("l1", 0.0):
            losses["l1"] = weights["l1"] * nn.functional.l1_loss(pred, batch["y"])
        return losses

    def metric_names(self) -> set[str]:
        return {"mse", "mae"}

    def metric_specs(self) -> dict[str, MetricSpec]:
        """``mse`` / ``mae``, lower is better, plausible up to 10× what predicting the targets' mean scores.

        Predicting the mean of ``y = W x + noise`` (x ~ N(0, I)) gives an MSE of Var(y) = mean ‖W_o‖² + noise²
        and an MAE of √(2/π)·σ(y); a model ten times worse than that constant guess is not fitting this data.
        """
        d = self.data_cfg
        w = torch.randn(d.out_features, d.in_features, generator=torch.Generator().manual_seed(d.seed))
        var_y = float(w.pow(2).sum(dim=1).mean()) + d.noise**2
        return {
            "mse": MetricSpec(plausible=(0.0, 10.0 * var_y)),
            "mae": MetricSpec(plausible=(0.0, 10.0 * (2.0 / math.pi) ** 0.5 * var_y**0.5)),
        }

    def eval_step(
        self,
        model: nn.Module,
        batch: Mapping[str, torch.Tensor],
        indices: torch.Tensor,
        evaluator: SquaredErrorEvaluator,  # type: ignore[override]
    ) -> None:
        evaluator.update(model(batch["x"]), batch["y"], indices)
