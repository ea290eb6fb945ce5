"""ViECap's feature pickle (through the restricted unpickler), COCO caption annotations, predict inputs."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.tasks.captioning.readers import (
    UnsafePickleError,
    load_pickle,
    read_coco_captions,
    read_prediction_inputs,
    read_viecap_pickle,
    records_from_config,
)
from trainwell.tasks.captioning.task import CaptioningDataConfig


class CreatesAFile:
    """A pickle payload that would create a file when loaded (the classic __reduce__ exploit)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([[["dog"], "a dog", CreatesAFile(marker)]]))
    with pytest.raises(UnsafePickleError, match=r"evil\.pickle.*(posix|os)\.system"):
        load_pickle(path)
    assert not marker.exists()
    # the same payload through pickle itself does run: the test's payload is real
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_numpy_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.pickle"
    path.write_bytes(pickle.dumps([[["dog"], "a dog", np.array([{"a": 1}], dtype=object)]]))
    with pytest.raises(UnsafePickleError, match="object dtype"):
        load_pickle(path)


def write_viecap_pickle(path: Path, n: int, tensor: bool) -> list:
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        features = rng.standard_normal(512).astype(np.float16)
        entries.append(
            [
                ["dog", "bench"][: 1 + i % 2],
                f"A dog number {i} on a bench.",
                torch.from_numpy(features) if tensor else features,
            ]
        )
    path.write_bytes(pickle.dumps(entries))
    return entries


@pytest.mark.parametrize("tensor", [False, True])
def test_viecap_pickle_round_trip(tmp_path: Path, tensor: bool) -> None:
    path = tmp_path / "coco_with_entities.pickle"
    entries = write_viecap_pickle(path, 4, tensor)
    read = read_viecap_pickle(path)
    assert [r[0] for r in read] == [e[0] for e in entries]
    assert [r[1] for r in read] == [e[1] for e in entries]
    for (_, _, features), entry in zip(read, entries, strict=True):
        assert features.dtype == np.float16 and features.shape == (512,)
        assert np.array_equal(features, np.asarray(entry[2]))


def test_bad_entries_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps([[["dog"], "a dog", np.zeros(512)], [["cat"], "a cat"]]))
    with pytest.raises(ValueError, match=r"bad\.pickle entry 1: expected \[entities, caption, clip_features\]"):
        read_viecap_pickle(path)


def test_coco_annotations_and_config_keys(tmp_path: Path) -> None:
    write_viecap_pickle(tmp_path / "train.pickle", 6, tensor=False)
    rng = np.random.default_rng(1)
    val = [[["dog"], 42, rng.standard_normal(512).astype(np.float16)], [["cat"], 7, rng.standard_normal(512)]]
    (tmp_path / "val.pickle").write_bytes(pickle.dumps(val))
    coco = {
        "images": [{"id": 42, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 42, "id": 1, "caption": "A dog."},
            {"image_id": 7, "id": 2, "caption": "A cat."},
            {"image_id": 42, "id": 3, "caption": "A puppy."},
        ],
    }
    (tmp_path / "captions_val.json").write_text(json.dumps(coco))
    assert read_coco_captions(tmp_path / "captions_val.json") == {42: ["A dog.", "A puppy."], 7: ["A cat."]}
    cfg = CaptioningDataConfig(
        root=str(tmp_path), train_pickle="train.pickle", val_pickle="val.pickle", val_annotations="captions_val.json"
    )
    train = records_from_config(cfg, "train")
    assert len(train) == 6 and train[3].captions == ("A dog number 3 on a bench.",)
    assert train[3].detected == ("dog", "bench")
    val_records = records_from_config(cfg, "val")
    assert [r.image_id for r in val_records] == [42, 7]
    assert val_records[0].captions == ("A dog.", "A puppy.")
    missing = CaptioningDataConfig(root=str(tmp_path), train_pickle="train.pickle")
    with pytest.raises(ValueError, match=r"data\.val_pickle is not set"):
        records_from_config(missing, "val")


def test_prediction_inputs(tmp_path: Path) -> None:
    one = {"features": [0.1] * 512, "entities": ["dog"]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "many.json").write_text(json.dumps([one, {"features": [0.2] * 512}]))
    np.save(tmp_path / "many.npy", np.ones((3, 512), dtype=np.float32))
    assert [e for _, e in read_prediction_inputs(tmp_path / "one.json", 512)] == [["dog"]]
    assert [e for _, e in read_prediction_inputs(tmp_path / "many.json", 512)] == [["dog"], []]
    assert len(read_prediction_inputs(tmp_path / "many.npy", 512)) == 3
    with pytest.raises(ValueError, match="512 features, but the model takes 640"):
        read_prediction_inputs(tmp_path / "one.json", 640)
