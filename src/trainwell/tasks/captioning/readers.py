"""Readers for the real formats: ViECap's feature pickle, COCO caption annotations, and ``predict`` inputs.

ViECap's pre-extracted training data is a pickle of ``[[entities, caption, clip_features], ...]`` — detected (or
caption) nouns, the caption, and a float16 CLIP feature as a numpy array or torch tensor. A pickle can run code
when loaded, so it is read with :class:`RestrictedUnpickler`, which builds lists, tuples, dicts, strings, numbers,
numpy arrays and torch tensors and refuses every other global before anything runs.
"""

from __future__ import annotations

import io
import json
import pickle
import random
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.engine.task import DataError
from trainwell.tasks.captioning.data_config import CaptioningDataConfig
from trainwell.tasks.captioning.datasets import CaptionRecord


class CaptionDataError(DataError):
    """A data file trainwell cannot read as given; the CLI prints it as one message (no traceback)."""


class UnsafePickleError(pickle.UnpicklingError, CaptionDataError):
    """The pickle names a global outside the allowed data types (it could run code); nothing of it was run."""


def _numpy_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:  # object arrays would unpickle arbitrary objects element by element
        raise UnsafePickleError(f"Refusing a numpy object dtype ({dtype}) in a feature pickle.")
    return dtype


def _tensor_from_bytes(data: bytes) -> torch.Tensor:
    # torch.storage._load_from_bytes would call torch.load(weights_only=False): load the same bytes safely instead.
    return torch.load(io.BytesIO(data), weights_only=True)


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numpy_dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _tensor_from_bytes,
}
try:  # numpy >= 2 pickles through numpy._core, older releases through numpy.core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _reconstruct
    _ALLOWED[(_module, "scalar")] = scalar


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data only: containers, strings, numbers, numpy arrays, torch tensors."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"Refusing to load {module}.{name}: only lists, tuples, dicts, strings, numbers, numpy arrays and "
                "torch tensors may appear in a feature pickle (anything else could run code when loaded)."
            )
        return allowed


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; the error names the file."""
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle).load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
        # a truncated or corrupt file (what Python's unpickler raises on bad bytes)
        raise CaptionDataError(f"{path} is not a readable pickle ({type(error).__name__}: {error}).") from None


def _vector(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise CaptionDataError(f"{where}: clip_features must be a 1-D numeric vector ({err}).") from None
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # CLIP's encode_image keeps a batch axis of 1
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise CaptionDataError(
            f"{where}: clip_features must be a 1-D numeric vector; got shape {array.shape} {array.dtype}."
        )
    return array.astype(np.float16)


CAPTIONS_WITH_FEATURES = "captions_with_features"
IMAGES_WITH_CAPTIONS = "images_with_captions"
CAPTIONS_WITH_ENTITIES = "captions_with_entities"
LAYOUTS = {
    CAPTIONS_WITH_FEATURES: "[entities, caption, clip_features]",
    IMAGES_WITH_CAPTIONS: "[image_name, clip_features, [captions]]",
    CAPTIONS_WITH_ENTITIES: "[entities, caption]",
}
"""The entry layouts of ViECap's pickles, by name."""
EXPECTED_LAYOUTS = (
    "[[entities: list[str], caption: str, clip_features (D,)], ...] (ViECap's *_texts_features_*.pickle, the "
    "training data; also validation, the caption being the one reference or, with data.val_annotations, a COCO "
    "image id) or [[image_name: str | int, clip_features (D,), [captions: str, ...]], ...] (ViECap's validation "
    "and test pickles, e.g. val_captions_ViT-B32.pickle)"
)


def _strings(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _is_vector(value: Any) -> bool:
    shape = tuple(value.shape) if isinstance(value, torch.Tensor | np.ndarray) else ()
    return len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)


def layout_of(entry: Any) -> str | None:
    """The name of ``entry``'s layout (:data:`LAYOUTS`), or ``None`` when it is none of them."""
    if not isinstance(entry, list | tuple):
        return None
    if len(entry) == 3 and _strings(entry[0]) and isinstance(entry[1], str | int) and _is_vector(entry[2]):
        return CAPTIONS_WITH_FEATURES
    if len(entry) == 3 and isinstance(entry[0], str | int) and _is_vector(entry[1]) and _strings(entry[2]):
        return IMAGES_WITH_CAPTIONS
    if len(entry) == 2 and _strings(entry[0]) and isinstance(entry[1], str):
        return CAPTIONS_WITH_ENTITIES
    return None


def describe(value: Any, depth: int = 0) -> str:
    """A short picture of ``value``'s structure, e.g. ``[list[str] (5), str, Tensor float16 (512,)]``."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"{type(value).__name__} {str(value.dtype).replace('torch.', '')} {tuple(value.shape)}"
    if isinstance(value, list | tuple) and depth == 0:
        return "[" + ", ".join(describe(v, 1) for v in value[:6]) + (", ..." if len(value) > 6 else "") + "]"
    if isinstance(value, list | tuple):
        kinds = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__}[{' | '.join(kinds)}] ({len(value)})"
    return type(value).__name__


def read_feature_pickle(path: Path, key: str) -> tuple[str, list[tuple[Any, Any, np.ndarray]]]:
    """ViECap's pickle at ``path`` (the config key ``key`` names it) → ``(layout, entries)``.

    Entries are ``(entities, caption or image id, features (D,) float16)`` for ``captions_with_features`` and
    ``(image name or id, references, features)`` for ``images_with_captions``; the layout is that of entry 0, and
    every entry must have it. ``[[entities, caption], ...]`` (ViECap's ``*_with_entities.pickle``) has no features
    and is refused with what to run on it.
    """
    data = load_pickle(path)
    if not isinstance(data, list | tuple) or not data:
        raise CaptionDataError(f"{key} {path}: found {describe(data)}; expected a non-empty {EXPECTED_LAYOUTS}.")
    layout = layout_of(data[0])
    if layout == CAPTIONS_WITH_ENTITIES:
        raise CaptionDataError(
            f"{key} {path} is ViECap's captions-with-entities layout [[entities, caption], ...] (entry 0: "
            f"{describe(data[0])}), which holds no CLIP features: ViECap encodes these captions with CLIP's text "
            "encoder while it trains, and trainwell takes the features pre-extracted. Run ViECap's "
            "texts_features_extraction.py on this file (it appends each caption's CLIP text feature) and set "
            f"{key} to its output; expected {EXPECTED_LAYOUTS}."
        )
    if layout is None:
        raise CaptionDataError(f"{key} {path}: entry 0 is {describe(data[0])}; expected {EXPECTED_LAYOUTS}.")
    out = []
    for index, entry in enumerate(data):
        where = f"{path} entry {index}"
        if layout_of(entry) != layout:
            raise CaptionDataError(f"{where}: expected {LAYOUTS[layout]} like entry 0; found {describe(entry)}.")
        if layout == CAPTIONS_WITH_FEATURES:
            out.append((list(entry[0]), entry[1], _vector(entry[2], where)))
        else:
            out.append((entry[0], list(entry[2]), _vector(entry[1], where)))
    return layout, out


def read_viecap_pickle(path: Path) -> list[tuple[list[str], Any, np.ndarray]]:
    """``[[entities, caption, clip_features], ...]`` → ``[(entities, caption, features (D,) float16)]``."""
    layout, entries = read_feature_pickle(path, "pickle")
    if layout != CAPTIONS_WITH_FEATURES:
        raise CaptionDataError(f"{path}: expected {LAYOUTS[CAPTIONS_WITH_FEATURES]} entries; found {layout}.")
    return entries


def read_coco_captions(path: Path) -> dict[int, list[str]]:
    """COCO caption annotations ``{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`` →
    ``{image_id: [captions]}`` (every listed image, in file order)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CaptionDataError(f"'{path}' is not valid JSON ({err}); expected COCO caption annotations.") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise CaptionDataError(f"{path}: expected a COCO captions file with an 'annotations' list.")
    references: dict[int, list[str]] = {int(image["id"]): [] for image in data.get("images", [])}
    for index, annotation in enumerate(data["annotations"]):
        caption = annotation.get("caption") if isinstance(annotation, dict) else None
        if (
            not isinstance(annotation, dict)
            or "image_id" not in annotation
            or not (isinstance(caption, str) and caption.strip())
        ):
            raise CaptionDataError(f"{path}: annotations[{index}] needs 'image_id' and a non-empty string 'caption'.")
        references.setdefault(int(annotation["image_id"]), []).append(caption)
    return references


def _resolve(root: str | None, value: str | None, key: str) -> Path:
    if not value:
        raise CaptionDataError(f"data.{key} is not set; it is needed when data.train_pickle is (train from files).")
    path = Path(value)
    path = path if path.is_absolute() or root is None else Path(root) / path
    if not path.is_file():
        raise CaptionDataError(f"data.{key}: {path} does not exist.")
    return path


def training_subset(records: list[CaptionRecord], ratio: float, seed: int, size: int | None) -> list[CaptionRecord]:
    """ViECap's low-data setting, then a size cap: with ``ratio < 1`` the records are shuffled by
    ``random.Random(seed)`` (ViECap: ``random.seed(seed)``, then ``random.shuffle``: the same permutation, so
    ``data.seed`` = ViECap's ``--random_seed`` keeps the same captions) and the first ``int(N * ratio)`` kept; then,
    when ``size`` is given, the first ``size`` of those."""
    if not 0.0 < ratio <= 1.0:
        raise CaptionDataError(f"data.few_shot_ratio must be in (0, 1]; got {ratio}.")
    if ratio < 1.0:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        records = [records[i] for i in order[: int(len(records) * ratio)]]
        if not records:
            raise CaptionDataError(f"data.few_shot_ratio={ratio} keeps none of the training records.")
    if size is not None:
        if not 0 < size <= len(records):
            raise CaptionDataError(f"data.train_size={size}, but there are {len(records)} training records to use.")
        records = records[:size]
    return records


def _val_records(cfg: CaptioningDataConfig) -> list[CaptionRecord]:
    path = _resolve(cfg.root, cfg.val_pickle, "val_pickle")
    layout, entries = read_feature_pickle(path, "data.val_pickle")
    if layout == IMAGES_WITH_CAPTIONS:
        if cfg.val_annotations:
            raise CaptionDataError(
                f"data.val_pickle {path} holds each image's references ({LAYOUTS[layout]}), so data.val_annotations "
                "would not be read: unset it (or give a pickle of [entities, image_id, clip_features])."
            )
        empty = [index for index, (_, refs, _) in enumerate(entries) if not refs]
        if empty:
            raise CaptionDataError(f"data.val_pickle {path}: entries {empty[:5]} have no reference caption.")
        return [CaptionRecord(name, feats, (), tuple(refs), ()) for name, refs, feats in entries]
    if not cfg.val_annotations:
        # each entry's caption is its one reference; its nouns are the ground truth of entity recall
        return [
            CaptionRecord(i, feats, tuple(ents), (caption,), tuple((e,) for e in ents))
            for i, ((ents, _, feats), caption) in enumerate(zip(entries, _captions(entries, path), strict=True))
        ]
    references = read_coco_captions(_resolve(cfg.root, cfg.val_annotations, "val_annotations"))
    records = []
    for index, (ents, image_id, feats) in enumerate(entries):
        if not isinstance(image_id, int) or image_id not in references or not references[image_id]:
            raise CaptionDataError(
                f"data.val_pickle entry {index}: with data.val_annotations the second field must be an image id "
                f"with captions in {cfg.val_annotations}; got {image_id!r}."
            )
        records.append(CaptionRecord(image_id, feats, tuple(ents), tuple(references[image_id]), ()))
    return records


def _captions(entries: list[tuple[Any, Any, np.ndarray]], path: Path) -> list[str]:
    """The second field of each entry, which must be a caption: ``None`` or a number would train as "None"/"3"."""
    for index, (_, caption, _) in enumerate(entries):
        if not (isinstance(caption, str) and caption.strip()):
            raise CaptionDataError(
                f"{path} entry {index}: the caption (second field) must be a non-empty string; got {caption!r}. "
                "Fix or drop that entry."
            )
    return [caption for _, caption, _ in entries]


def records_from_config(cfg: CaptioningDataConfig, split: str) -> list[CaptionRecord]:
    """The train or val records from ``data.train_pickle`` / ``data.val_pickle`` (+ ``data.val_annotations``),
    training cut by ``data.few_shot_ratio`` and ``data.train_size``, validation by ``data.val_size``."""
    if split == "train":
        path = _resolve(cfg.root, cfg.train_pickle, "train_pickle")
        layout, entries = read_feature_pickle(path, "data.train_pickle")
        if layout != CAPTIONS_WITH_FEATURES:
            raise CaptionDataError(
                f"data.train_pickle {path} holds images with references ({LAYOUTS[layout]}, ViECap's validation "
                f"layout); training reads {LAYOUTS[CAPTIONS_WITH_FEATURES]} (ViECap's *_texts_features_*.pickle)."
            )
        records = [
            CaptionRecord(i, feats, tuple(ents), (caption,), ())
            for i, ((ents, _, feats), caption) in enumerate(zip(entries, _captions(entries, path), strict=True))
        ]
        return training_subset(records, cfg.few_shot_ratio, cfg.seed, cfg.train_size)
    records = _val_records(cfg)
    if cfg.val_size is not None:
        if not 0 < cfg.val_size <= len(records):
            raise CaptionDataError(f"data.val_size={cfg.val_size}, but {cfg.val_pickle} has {len(records)} images.")
        records = records[: cfg.val_size]
    return records


def read_prediction_inputs(path: Path, feature_dim: int) -> list[tuple[np.ndarray, list[str]]]:
    """``predict`` inputs: JSON ``{"features": [...], "entities": [...]}`` (or a list of them) or ``.npy``
    ``(D,)``/``(N, D)`` → ``[(features (D,) float16, entities)]``."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise CaptionDataError(f"{path}: not a readable .npy array of features ({err}).") from None
        rows = array[None] if array.ndim == 1 else array
        items = [(row, []) for row in rows]
    else:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CaptionDataError(
                f"{path}: not valid JSON ({err}); expected {{'features': [...], 'entities': [...]}}."
            ) from None
        data = data if isinstance(data, list) else [data]
        items = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or "features" not in item:
                raise CaptionDataError(
                    f"{path} item {index}: expected {{'features': [{feature_dim} numbers], 'entities'}}."
                )
            entities = item.get("entities", [])
            if not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
                raise CaptionDataError(f"{path} item {index}: 'entities' must be a list of strings.")
            items.append((item["features"], entities))
    out = []
    for index, (features, entities) in enumerate(items):
        vector = _vector(features, f"{path} item {index}")
        if vector.shape[0] != feature_dim:
            raise CaptionDataError(
                f"{path} item {index}: {vector.shape[0]} features, but the model takes {feature_dim} "
                "(task.model.clip_hidden_size)."
            )
        out.append((vector, list(entities)))
    if not out:
        raise CaptionDataError(f"{path}: no inputs to caption.")
    return out
