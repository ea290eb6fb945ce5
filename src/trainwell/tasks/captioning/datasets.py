"""Caption records (features, detected entities, reference captions), the tokenised dataset, and its collation.

A :class:`CaptionRecord` is what every source produces — the synthetic corpus, ViECap's feature pickle, COCO
annotations (:mod:`.readers`) — so the same model trains from any of them. The dataset tokenises once at
construction; a sample is ``{"features": (D,) float32, "entity_ids": [[int]], "caption_ids": [int] + EOS}``.
Training uses each record's first caption (ViECap's records hold one caption each); evaluation scores against all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainwell.tasks.captioning.corpus import ClipLikeEncoder, CorpusConfig, caption_words_of, make_sample
from trainwell.tasks.captioning.prompts import entity_token_ids
from trainwell.tasks.captioning.tokenizer import CaptionTokenizer


@dataclass(frozen=True)
class CaptionRecord:
    """One image (or, in text-only training, one caption) with its feature and entities.

    Attributes:
        image_id: the id written to ``captions.json`` (a COCO id, or an image name as ViECap's pickles hold it).
        features: ``(D,)`` feature (float16 as ViECap stores it).
        detected: entities the hard prompt is built from (a detector's output, or nouns of the caption).
        captions: reference captions (training uses the first).
        entities: ground-truth entities for entity recall, each as the words naming it (synonyms); may be empty.
    """

    image_id: int | str
    features: np.ndarray
    detected: tuple[str, ...]
    captions: tuple[str, ...]
    entities: tuple[tuple[str, ...], ...] = ()


def synthetic_records(cfg: CorpusConfig, split: str, size: int, num_captions: int) -> list[CaptionRecord]:
    """Samples ``0 … size-1`` of ``split`` of the synthetic corpus as records."""
    encoder = ClipLikeEncoder(cfg)
    records = []
    for index in range(size):
        sample = make_sample(cfg, split, index, num_captions, encoder)
        entities = tuple(caption_words_of(obj) for obj in sample.scene.objects)
        records.append(CaptionRecord(index, sample.features, sample.detected, sample.captions, entities))
    return records


class CaptionDataset(Dataset):
    """Tokenised records: features, each detected entity's tokens (deduplicated, at most ``max_entities``), and
    the first caption's tokens (at most ``max_caption_tokens``, then EOS)."""

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        tokenizer: CaptionTokenizer,
        max_entities: int,
        max_caption_tokens: int,
    ) -> None:
        if not records:
            raise ValueError("CaptionDataset: no records (check the data paths and sizes in the data: section).")
        self.records = list(records)
        dims = {r.features.shape for r in self.records}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"All features must be vectors of one size; found shapes {sorted(dims)[:5]}.")
        self.eos_id = tokenizer.eos_id
        vocab: dict[str, list[int]] = {}
        self.entity_ids: list[list[list[int]]] = []
        for record in self.records:
            unique = list(dict.fromkeys(e.strip() for e in record.detected if e.strip()))[:max_entities]
            for entity in unique:
                if entity not in vocab:
                    vocab[entity] = entity_token_ids(tokenizer, [entity])[0]
            self.entity_ids.append([vocab[e] for e in unique])
        encoded = tokenizer.encode_batch([r.captions[0] if r.captions else "" for r in self.records])
        self.caption_ids = [[*ids[:max_caption_tokens], self.eos_id] for ids in encoded]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "features": torch.from_numpy(np.asarray(self.records[index].features, dtype=np.float32)),
            "entity_ids": self.entity_ids[index],
            "caption_ids": self.caption_ids[index],
        }


def collate_captions(samples: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of samples to the batch's longest entity list, entity and caption.

    Returns:
        ``features (B, D)``, ``entity_ids (B, E, W)``, ``entity_lengths (B, E)`` (0 = empty slot),
        ``caption_ids (B, C)`` (EOS-terminated, ``pad_id`` beyond), ``caption_lengths (B,)``.
    """
    batch = len(samples)
    num_entities = max([len(s["entity_ids"]) for s in samples] + [1])
    width = max([len(e) for s in samples for e in s["entity_ids"]] + [1])
    caption_len = max(len(s["caption_ids"]) for s in samples)
    entity_ids = torch.full((batch, num_entities, width), pad_id, dtype=torch.long)
    entity_lengths = torch.zeros(batch, num_entities, dtype=torch.long)
    caption_ids = torch.full((batch, caption_len), pad_id, dtype=torch.long)
    caption_lengths = torch.zeros(batch, dtype=torch.long)
    for row, sample in enumerate(samples):
        for k, ids in enumerate(sample["entity_ids"]):
            entity_ids[row, k, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            entity_lengths[row, k] = len(ids)
        caption_ids[row, : len(sample["caption_ids"])] = torch.tensor(sample["caption_ids"], dtype=torch.long)
        caption_lengths[row] = len(sample["caption_ids"])
    return {
        "features": torch.stack([s["features"] for s in samples]),
        "entity_ids": entity_ids,
        "entity_lengths": entity_lengths,
        "caption_ids": caption_ids,
        "caption_lengths": caption_lengths,
    }


class CaptionCollator:
    """A picklable ``collate_fn`` (DataLoader workers) padding with the tokenizer's pad id."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_captions(samples, self.pad_id)
