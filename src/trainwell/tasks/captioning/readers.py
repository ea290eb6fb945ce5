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
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainwell.engine.task import DataError, MissingDataError
from trainwell.tasks.captioning.datasets import CaptionRecord

if TYPE_CHECKING:
    from trainwell.tasks.captioning.task import CaptioningDataConfig


class UnsafePickleError(pickle.UnpicklingError, DataError):
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(
            f"'{path}' is not a readable pickle ({error or type(error).__name__}): truncated or not "
            f"ViECap's feature pickle."
        ) from None


def _vector(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # CLIP's encode_image keeps a batch axis of 1
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{where}: clip_features must be a 1-D numeric vector; got shape {array.shape} {array.dtype}.")
    return array.astype(np.float16)


def read_viecap_pickle(path: Path) -> list[tuple[list[str], Any, np.ndarray]]:
    """``[[entities, caption, clip_features], ...]`` → ``[(entities, caption, features (D,) float16)]``."""
    data = load_pickle(path)
    if not isinstance(data, list | tuple):
        raise DataError(f"{path}: expected a list of [entities, caption, clip_features]; got {type(data).__name__}.")
    out = []
    for index, entry in enumerate(data):
        where = f"{path} entry {index}"
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise DataError(f"{where}: expected [entities, caption, clip_features]; got {str(entry)[:80]}.")
        entities, caption, features = entry
        if not isinstance(entities, list | tuple) or not all(isinstance(e, str) for e in entities):
            raise DataError(f"{where}: entities must be a list of strings; got {str(entities)[:80]}.")
        out.append((list(entities), caption, _vector(features, where)))
    return out


def read_coco_captions(path: Path) -> dict[int, list[str]]:
    """COCO caption annotations ``{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`` →
    ``{image_id: [captions]}`` (every listed image, in file order)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}' is not valid JSON ({err}); expected COCO caption annotations.") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO captions file with an 'annotations' list.")
    references: dict[int, list[str]] = {int(image["id"]): [] for image in data.get("images", [])}
    for index, annotation in enumerate(data["annotations"]):
        if (
            not isinstance(annotation, dict)
            or "image_id" not in annotation
            or not _is_caption(annotation.get("caption"))
        ):
            raise DataError(f"{path}: annotations[{index}] needs 'image_id' and a non-empty string 'caption'.")
        references.setdefault(int(annotation["image_id"]), []).append(annotation["caption"])
    return references


def _resolve(root: str | None, value: str | None, key: str) -> Path:
    if not value:
        raise DataError(f"data.{key} is not set; it is needed when data.train_pickle is (train from files).")
    path = Path(value)
    path = path if path.is_absolute() or root is None else Path(root) / path
    if not path.is_file():
        raise MissingDataError(f"data.{key}: {path} does not exist.")
    return path


def _is_caption(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _captions(entries: list[tuple[list[str], Any, np.ndarray]], path: Path) -> list[str]:
    """The second field of each entry, which must be a caption: ``None`` or a number would train as "None"/"3"."""
    for index, (_, caption, _) in enumerate(entries):
        if not _is_caption(caption):
            raise DataError(
                f"{path} entry {index}: the caption (second field) must be a non-empty string; got {caption!r}. "
                f"Fix or drop that entry."
            )
    return [caption for _, caption, _ in entries]


def records_from_config(cfg: CaptioningDataConfig, split: str) -> list[CaptionRecord]:
    """The train or val records from ``data.train_pickle`` / ``data.val_pickle`` (+ ``data.val_annotations``)."""
    if split == "train":
        path = _resolve(cfg.root, cfg.train_pickle, "train_pickle")
        entries = read_viecap_pickle(path)
        return [
            CaptionRecord(i, feats, tuple(ents), (caption,), ())
            for i, ((ents, _, feats), caption) in enumerate(zip(entries, _captions(entries, path), strict=True))
        ]
    path = _resolve(cfg.root, cfg.val_pickle, "val_pickle")
    entries = read_viecap_pickle(path)
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
            raise DataError(
                f"{path} entry {index}: with data.val_annotations the second field must be an image id "
                f"with captions in {cfg.val_annotations}; got {image_id!r}."
            )
        records.append(CaptionRecord(image_id, feats, tuple(ents), tuple(references[image_id]), ()))
    return records


def read_prediction_inputs(path: Path, feature_dim: int) -> list[tuple[np.ndarray, list[str]]]:
    """``predict`` inputs: JSON ``{"features": [...], "entities": [...]}`` (or a list of them) or ``.npy``
    ``(D,)``/``(N, D)`` → ``[(features (D,) float16, entities)]``."""
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        rows = array[None] if array.ndim == 1 else array
        items = [(row, []) for row in rows]
    else:
        data = json.loads(path.read_text())
        data = data if isinstance(data, list) else [data]
        items = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or "features" not in item:
                raise ValueError(f"{path} item {index}: expected {{'features': [{feature_dim} numbers], 'entities'}}.")
            entities = item.get("entities", [])
            if not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
                raise ValueError(f"{path} item {index}: 'entities' must be a list of strings.")
            items.append((item["features"], entities))
    out = []
    for index, (features, entities) in enumerate(items):
        vector = _vector(features, f"{path} item {index}")
        if vector.shape[0] != feature_dim:
            raise ValueError(
                f"{path} item {index}: {vector.shape[0]} features, but the model takes {feature_dim} "
                "(task.model.clip_hidden_size)."
            )
        out.append((vector, list(entities)))
    if not out:
        raise ValueError(f"{path}: no inputs to caption.")
    return out
