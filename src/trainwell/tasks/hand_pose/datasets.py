"""Map-style datasets of synthetic hands, generated once (vectorised) and batched by fancy indexing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainwell.tasks.hand_pose.synthetic import Split, SyntheticHandsConfig, generate_hands

SAMPLE_KEYS: tuple[str, ...] = (
    "joints_cam_mm",
    "joints_rel_mm",
    "root_cam_mm",
    "keypoints_2d_px",
    "visibility",
    "intrinsics",
    "hand_scale",
)
"""Fields of a sample (shapes and units: :func:`trainwell.tasks.hand_pose.synthetic.generate_hands`)."""


class SyntheticHandPoseDataset(Dataset):
    """``size`` synthetic hands of one split; sample ``i`` is a pure function of ``(seed, split, i)``.

    All samples are generated at construction, in chunks (about a second per 100k), and held as one
    tensor per field. ``dataset[i]`` is a dict of per-sample tensors; ``dataset.__getitems__(indices)``
    (which PyTorch's DataLoader calls when present) is the batched dict, one fancy-index per field.

    Args:
        cfg: generator parameters.
        seed: the data seed (``data.seed``).
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint streams).
        size: number of samples (indices ``0 … size-1``).
        chunk_size: samples generated per vectorised call (bounds the generator's peak memory).
    """

    def __init__(
        self, cfg: SyntheticHandsConfig, seed: int, split: Split, size: int, *, chunk_size: int = 16_384
    ) -> None:
        if size < 0:
            raise ValueError(f"Dataset size for split '{split}' must be ≥ 0 (data.{split}_size); got {size}.")
        self.split = split
        self.seed = seed
        chunks: dict[str, list[torch.Tensor]] = {key: [] for key in SAMPLE_KEYS}
        for start in range(0, max(size, 1), chunk_size):  # one (empty) call when size is 0
            fields = generate_hands(cfg, seed, split, np.arange(start, min(size, start + chunk_size)))
            for key in SAMPLE_KEYS:
                chunks[key].append(fields[key])
        self.fields: dict[str, torch.Tensor] = {key: torch.cat(parts) for key, parts in chunks.items()}
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.fields.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch ``indices`` as one dict of ``(len(indices), ...)`` tensors."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return {key: value[index] for key, value in self.fields.items()}


def collate_hand_batch(items: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """DataLoader ``collate_fn``: pass an already batched dict through; stack a list of per-sample dicts."""
    if isinstance(items, Mapping):
        return dict(items)
    if not items:
        raise ValueError("collate_hand_batch got an empty batch.")
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
