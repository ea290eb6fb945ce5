"""The captioning pack's ``data:`` section, apart from the task so the readers can be typed by it."""

from __future__ import annotations

from dataclasses import dataclass

from trainwell.engine.task import DataConfig
from trainwell.tasks.captioning.corpus import CorpusConfig


@dataclass
class CaptioningDataConfig(CorpusConfig, DataConfig):
    """``data:`` section: the synthetic corpus (sizes, seed, generator), or ViECap/COCO files."""

    train_size: int | None = None
    """Training records: synthetic ones to make (``None``: 20 000), or the first of the pickle's (``None``: all)."""
    val_size: int | None = None
    """Validation images: synthetic ones to make (``None``: 500), or the first of the pickle's (``None``: all)."""
    test_size: int = 500
    """Synthetic test images (``trainwell test``; a third disjoint stream)."""
    few_shot_ratio: float = 1.0
    """ViECap's low-data setting: keep this share of the training records, drawn by ``random.Random(data.seed)``."""
    references_per_image: int = 5
    """Synthetic reference captions per validation image (COCO has 5)."""
    root: str | None = None
    """Directory the file paths below are relative to; setting ``train_pickle`` switches from synthetic to files."""
    train_pickle: str | None = None
    """ViECap feature pickle ``[[entities, caption, clip_features], ...]`` to train on."""
    val_pickle: str | None = None
    """Validation pickle in the same format; with ``val_annotations``, the second field is the COCO image id."""
    val_annotations: str | None = None
    """COCO captions JSON (``{"images", "annotations": [{"image_id", "caption"}]}``): references of the val images."""
