"""Map-style datasets of rendered RGB-D crops (:mod:`.render`), with consistent augmentation (:mod:`.augment`).

Training set: ``num_unique`` rendered hands shown ``repeats`` times, each time with a different augmentation.
Index ``i`` means hand ``i % num_unique`` with augmentation draw ``i // num_unique``, so every sample is a pure
function of ``(seed, index)`` — any order, any worker, bitwise the same after a resume — and one ``fit`` epoch over
``num_unique × repeats`` indices replaces ``repeats`` epochs (the engine need not tell the dataset the epoch).
Rendering is the costly part (see :func:`~trainwell.tasks.hand_pose.render.render_rgbd`), so each DataLoader
worker keeps the crops it rendered (uint8 RGB, int16 depth: ~20 kB per 64 px crop) and only re-augments them.

Validation set: rendered once at construction, without augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainwell.tasks.hand_pose.augment import AugmentConfig, augment_batch, augment_keys
from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
from trainwell.tasks.hand_pose.synthetic import Split, SyntheticHandsConfig

RGBD_SAMPLE_KEYS: tuple[str, ...] = (
    "rgb",
    "depth_mm",
    "keypoints_2d_px",
    "visibility",
    "intrinsics",
    "joints_cam_mm",
    "joints_rel_mm",
    "root_cam_mm",
    "vertices_rel_mm",
    "hand_scale",
)
"""Fields of an RGB-D sample (shapes and units: :func:`~trainwell.tasks.hand_pose.render.render_rgbd`)."""


def _pack(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Compact storage: RGB as uint8, depth as int16 millimetres (the sensor's own precision)."""
    out = dict(sample)
    out["rgb"] = (sample["rgb"] * 255.0).round().to(torch.uint8)
    out["depth_mm"] = sample["depth_mm"].round().to(torch.int16)
    return out


def _unpack(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(sample)
    out["rgb"] = sample["rgb"].float() / 255.0
    out["depth_mm"] = sample["depth_mm"].float()
    return out


class RenderedHandDataset(Dataset):
    """Rendered RGB-D hand crops of one split; ``__getitems__`` returns a batched dict (see the module doc).

    Args:
        hands: the hand generator's parameters.
        render: the renderer's parameters.
        seed: the data seed.
        split: ``"train"`` (cached, augmented, ``num_unique × repeats`` indices) or ``"val"`` / ``"test"``
            (rendered at construction, ``num_unique`` indices, no augmentation).
        num_unique: distinct hands.
        repeats: augmented showings per hand (training only).
        augment: the augmentation, or ``None`` for none.
    """

    def __init__(
        self,
        hands: SyntheticHandsConfig,
        render: RenderConfig,
        seed: int,
        split: Split,
        num_unique: int,
        *,
        repeats: int = 1,
        augment: AugmentConfig | None = None,
        chunk_size: int = 64,
    ) -> None:
        if num_unique < 1 or repeats < 1:
            raise ValueError(f"split '{split}': need num_unique ≥ 1 and repeats ≥ 1; got {num_unique}, {repeats}.")
        self.hands, self.render, self.seed, self.split = hands, render, seed, split
        self.num_unique, self.repeats, self.chunk_size = num_unique, repeats, chunk_size
        self.augment = augment if augment is not None and augment.enabled else None
        self._cache: dict[int, dict[str, torch.Tensor]] = {}
        if split != "train":  # rendered once: evaluation workers would otherwise re-render every time
            self._render(list(range(num_unique)))

    def __len__(self) -> int:
        return self.num_unique * self.repeats

    def _render(self, hands: Sequence[int]) -> None:
        missing = sorted({h for h in hands if h not in self._cache})
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            fields = _pack(render_rgbd(self.hands, self.render, self.seed, self.split, np.asarray(chunk)))
            for row, hand in enumerate(chunk):
                self._cache[hand] = {key: fields[key][row] for key in RGBD_SAMPLE_KEYS}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch ``indices`` as one dict of ``(len(indices), ...)`` tensors."""
        indices = [int(i) for i in indices]
        if any(i < 0 or i >= len(self) for i in indices):
            raise IndexError(f"{self.split} dataset has {len(self)} samples; got indices {indices[:8]}…")
        hands = [i % self.num_unique for i in indices]
        self._render(hands)
        batch = _unpack({key: torch.stack([self._cache[h][key] for h in hands]) for key in RGBD_SAMPLE_KEYS})
        if self.augment is not None:
            draws = np.asarray([i // self.num_unique for i in indices])  # the showing: the "epoch" of this hand
            keys = augment_keys(self.seed, draws, np.asarray(hands))
            batch = augment_batch(batch, self.augment, keys)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
