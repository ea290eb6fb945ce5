"""Tasks that exercise what real ports need (imported by name from configs as ``port_tasks:<Class>``).

Not a test module. Each is the regression task with one port-specific twist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.config.schema import OptimConfig, ScheduleConfig
from trainwell.engine.amp import full_precision
from trainwell.engine.task import LossOutput
from trainwell.tasks.regression import RegressionTask

EPOCH_LOG: list[int] = []


class OpenPCDetStyleTask(RegressionTask):
    """A forward that returns (loss, tb_dict, disp_dict) with floats in tb_dict, mapped onto LossOutput."""

    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        pred = model(batch["x"])
        with full_precision():  # the loss in fp32 outside autocast, as ViECap computes its cross-entropy
            mse = (pred.float() - batch["y"]).pow(2).mean()
            l1 = (pred.float() - batch["y"]).abs().mean()
        loss = mse + 0.1 * l1
        tb_dict = {"loss_mse": mse, "loss_l1": 0.1 * l1, "pred_mean": pred.detach().mean(), "num_boxes": 7.0}
        disp_dict = {"mse_disp": mse.detach()}
        assert torch.allclose(loss, tb_dict["loss_mse"] + tb_dict["loss_l1"])
        return LossOutput(
            losses={"loss_mse": tb_dict["loss_mse"], "loss_l1": tb_dict["loss_l1"]},
            logs={"pred_mean": tb_dict["pred_mean"], "num_boxes": tb_dict["num_boxes"]},
            progress=disp_dict,
        )


class StepLRTask(RegressionTask):
    """Builds its own optimizer (SGD, two groups) and a torch StepLR scheduler; the engine saves and resumes them."""

    def build_optimizer(self, model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        params = list(model.parameters())
        return torch.optim.SGD(
            [{"params": params[:2], "lr": cfg.lr}, {"params": params[2:], "lr": cfg.lr * 0.5}], lr=cfg.lr, momentum=0.9
        )

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, total_steps: int, cfg: ScheduleConfig
    ) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=0.5)


class BucketTask(RegressionTask):
    """A batch sampler that groups samples by a 'length' (here: the sign pattern of x), batch sizes vary."""

    def build_batch_sampler(self, dataset: Dataset, batch_size: int, epoch: int, seed: int) -> Sequence[list[int]]:
        generator = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]
        buckets: dict[int, list[int]] = {}
        for index in order:
            key = int(dataset[index]["x"][0] > 0)
            buckets.setdefault(key, []).append(index)
        batches = [b[i : i + batch_size] for b in buckets.values() for i in range(0, len(b), batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]


class EpochHookTask(RegressionTask):
    """Records on_epoch_start calls and switches a dataset flag the samples read (augmentation off at the end)."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        self.augment = {"on": True}
        return _Augmented(train, self.augment), val

    def on_epoch_start(self, epoch: int) -> None:
        EPOCH_LOG.append(epoch)
        self.augment["on"] = epoch < 2  # as OpenPCDet's DisableAugmentationHook for the last epoch


class _Augmented(Dataset):
    def __init__(self, base: Dataset, flag: dict[str, bool]) -> None:
        self.base, self.flag = base, flag

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        item["augmented"] = torch.tensor(float(self.flag["on"]))
        return item


class NumpyBatchTask(RegressionTask):
    """A collate that keeps NumPy arrays (the doctor's first-batch report must still cover them)."""

    def collate_fn(self) -> Any:
        def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
            return {
                "x": torch.stack([i["x"] for i in items]),
                "y": torch.stack([i["y"] for i in items]),
                "x_np": np.stack([i["x"].numpy() for i in items]),
            }

        return collate


class Fp16FeatureTask(RegressionTask):
    """Features stored in fp16 (as ViECap's CLIP features) and stacked by the collate: evaluation under bf16."""

    def collate_fn(self) -> Any:
        def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            x16 = torch.stack([i["x"].half() for i in items])
            # An op on fp16 tensors that CPU autocast (bf16) refuses inside its region.
            mixed = torch.cat([x16, x16.float().to(torch.float16)], dim=1)[:, : x16.shape[1]]
            return {"x": mixed.float(), "y": torch.stack([i["y"] for i in items])}

        return collate


class PlainFloatLossTask(RegressionTask):
    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"mse": float((model(batch["x"]) - batch["y"]).pow(2).mean().detach())}


class NoGradLossTask(RegressionTask):
    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        with torch.no_grad():
            return {"mse": (model(batch["x"]) - batch["y"]).pow(2).mean()}


class VectorLossTask(RegressionTask):
    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"mse": (model(batch["x"]) - batch["y"]).pow(2)}


def write_plain_loader_script(path: Path) -> None:
    """A script that knows nothing of trainwell: rebuild the MLP, load exported weights, print outputs."""
    path.write_text(
        "import sys, torch\n"
        "from torch import nn\n"
        "hidden = 16\n"
        "model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, hidden), nn.ReLU(),"
        " nn.Linear(hidden, 2))\n"
        "weights = sys.argv[1]\n"
        "if weights.endswith('.safetensors'):\n"
        "    from safetensors.torch import load_file\n"
        "    state = load_file(weights)\n"
        "else:\n"
        "    state = torch.load(weights, weights_only=True)\n"
        "model.load_state_dict(state)\n"
        "model.eval()\n"
        "x = torch.linspace(-1, 1, 16).reshape(2, 8)\n"
        "print(repr(model(x).detach().tolist()))\n"
    )


class _WritingEvaluator:
    """The regression evaluator plus prediction files (what COCO / KITTI / FreiHAND writers do)."""

    def __init__(self) -> None:
        from trainwell.tasks.regression import SquaredErrorEvaluator

        self.inner = SquaredErrorEvaluator()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def compute(self) -> dict[str, float]:
        from trainwell.doctor import Finding

        metrics = self.inner.compute()
        # What an evaluator may notice about its predictions; the engine hands it to the doctor.
        self.findings = [
            Finding("eval.example", "info", "An evaluator's own finding", f"mse {metrics['mse']:.3g}", "-")
        ]
        return metrics

    def save_outputs(self, out_dir: Path) -> list[Path]:
        indices, results = self.inner.local_results()
        path = out_dir / "per_sample.json"
        rows = [{"index": int(i), "sq": float(v)} for i, v in zip(indices, results["sq"], strict=True)]
        path.write_text(__import__("json").dumps(rows))
        return [path]


class PredictingTask(RegressionTask):
    """Writes per-sample predictions after evaluation and implements ``predict`` on a JSON list of inputs."""

    eval_modes: ClassVar[list[tuple[bool, bool]]] = []
    """``(grad enabled, model.training)`` at every ``eval_step`` call of this process (docs/porting.md's promise)."""

    def build_evaluator(self) -> Any:
        return _WritingEvaluator()

    def eval_step(self, model: nn.Module, batch: Any, indices: torch.Tensor, evaluator: Any) -> None:
        PredictingTask.eval_modes.append((torch.is_grad_enabled(), model.training))
        super().eval_step(model, batch, indices, evaluator)

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> Any:
        x = torch.tensor(__import__("json").loads(input_path.read_text()), dtype=torch.float32)
        assert not model.training and not torch.is_grad_enabled()
        return {"y": model(x).tolist()}
