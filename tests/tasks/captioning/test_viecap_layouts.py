"""ViECap's own pickles, written here in exactly the layouts its scripts write them: the text-feature training data
(``texts_features_extraction.py``: ``[[entities, caption, clip_features]]``), the validation/test images
(``images_features_extraction.py``: ``[[image_name, clip_features, [captions]]]``) and the captions with entities
(``entities_extraction.py``: ``[[entities, caption]]``, no features); few_shot_ratio and train_size honoured."""

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from captioning_helpers import small_model_config

from trainwell.tasks.captioning.readers import CaptionDataError, records_from_config
from trainwell.tasks.captioning.task import CaptioningDataConfig, CaptioningTask, CaptioningTaskConfig

ROOT = Path(__file__).resolve().parents[3]
CAPTIONS = [
    "A dog sits on a wooden bench.",
    "Two cats sleep on a sofa.",
    "A man rides a horse on the beach.",
    "A red bus drives down a street.",
    "A plate of food on a table.",
    "A boy throws a ball in a park.",
]
ENTITIES = [["dog", "bench"], ["cat", "sofa"], ["man", "horse", "beach"], ["bus", "street"], ["plate", "food"], []]


def write(path: Path, data: object) -> Path:
    with path.open("wb") as handle:
        pickle.dump(data, handle)  # as ViECap's scripts write them
    return path


def text_features(n: int = 6) -> list:
    """``[[entities, caption, CLIP text feature (512,) float16 tensor]]``: CLIP's ``encode_text(...).squeeze(0)``."""
    generator = torch.Generator().manual_seed(0)
    return [[list(ENTITIES[i % 6]), CAPTIONS[i % 6], torch.randn(512, generator=generator).half()] for i in range(n)]


def image_features(names: list) -> list:
    """``[[image_name, CLIP image feature (512,) float16 tensor, [captions]]]``."""
    generator = torch.Generator().manual_seed(1)
    return [
        [name, torch.randn(512, generator=generator).half(), [CAPTIONS[i], CAPTIONS[(i + 1) % 6]]]
        for i, name in enumerate(names)
    ]


@pytest.mark.parametrize("names", [["COCO_val2014_000000391895.jpg", "1018148011.jpg"], [391895, 522418]])
def test_the_validation_pickle_loads_with_its_image_ids(tmp_path: Path, names: list) -> None:
    write(tmp_path / "train.pickle", text_features())
    val = write(tmp_path / "val_captions_ViT-B32.pickle", image_features(names))
    data = CaptioningDataConfig(root=str(tmp_path), train_pickle="train.pickle", val_pickle=val.name)
    records = records_from_config(data, "val")
    assert [r.image_id for r in records] == names
    assert [r.captions for r in records] == [(CAPTIONS[0], CAPTIONS[1]), (CAPTIONS[1], CAPTIONS[2])]
    assert records[1].features.dtype.name == "float16"
    assert records[1].features.tolist() == image_features(names)[1][1].tolist()
    assert records[0].detected == () and records[0].entities == ()
    # scored and written by image id: captions.json holds the names as the pickle does
    task = CaptioningTask(CaptioningTaskConfig(model=small_model_config(), meteor=False, spice=False), data)
    evaluator = task.build_evaluator()
    tok = task.tokenizer
    evaluator.update(torch.arange(2), [torch.tensor(tok.encode(c)) for c in (CAPTIONS[0], CAPTIONS[2])])
    metrics = evaluator.compute()
    assert metrics["bleu_4"] == pytest.approx(1.0)  # each prediction is one of its image's references
    written = json.loads(evaluator.save_outputs(tmp_path / "out")[0].read_text())
    assert sorted(row["image_id"] for row in written) == sorted(names)


def test_the_training_pickle_loads_as_viecap_writes_it(tmp_path: Path) -> None:
    entries = text_features()
    data = CaptioningDataConfig(train_pickle=str(write(tmp_path / "coco_texts_features_ViT-B32.pickle", entries)))
    records = records_from_config(data, "train")
    assert [r.captions for r in records] == [(e[1],) for e in entries]
    assert [r.detected for r in records] == [tuple(e[0]) for e in entries]
    assert records[2].features.tolist() == entries[2][2].tolist()


def test_captions_with_entities_have_no_features_and_say_what_to_run(tmp_path: Path) -> None:
    path = write(
        tmp_path / "training_set_with_entities.pickle", [[e, c] for e, c in zip(ENTITIES, CAPTIONS, strict=True)]
    )
    with pytest.raises(CaptionDataError) as error:
        records_from_config(CaptioningDataConfig(train_pickle=str(path)), "train")
    message = str(error.value)
    assert "[[entities, caption], ...]" in message and "no CLIP features" in message
    assert "texts_features_extraction.py" in message and str(path) in message


def test_an_unknown_layout_shows_what_was_found_and_what_is_expected(tmp_path: Path) -> None:
    # nocaps' layout: [image_name, split, features, [captions]]
    path = write(tmp_path / "nocaps.pickle", [["4499.jpg", "near_domain", torch.zeros(512).half(), ["A cat."]]])
    with pytest.raises(CaptionDataError) as error:
        records_from_config(CaptioningDataConfig(train_pickle="x", val_pickle=str(path)), "val")
    message = str(error.value)
    assert "entry 0 is [str, str, Tensor float16 (512,), list[str] (1)]" in message
    assert "[[entities: list[str], caption: str, clip_features (D,)], ...]" in message
    assert "[[image_name: str | int, clip_features (D,), [captions: str, ...]], ...]" in message
    # a later entry in another layout is named by its index
    mixed = write(tmp_path / "mixed.pickle", [*text_features(2), image_features(["a.jpg"])[0]])
    with pytest.raises(CaptionDataError, match=r"mixed\.pickle entry 2: expected \[entities, caption, clip_features"):
        records_from_config(CaptioningDataConfig(train_pickle=str(mixed)), "train")


def test_few_shot_ratio_keeps_viecaps_subset_and_train_size_cuts(tmp_path: Path) -> None:
    entries = [[["dog"], f"caption {i}", torch.full((512,), float(i)).half()] for i in range(40)]
    path = str(write(tmp_path / "train.pickle", entries))
    # ViECap's CaptionsDataset after set_seed(30): random.shuffle(captions); keep int(len * ratio)
    random.seed(30)
    viecap = list(entries)
    random.shuffle(viecap)
    expected = [caption for _, caption, _ in viecap[: int(len(viecap) * 0.3)]]
    few = records_from_config(CaptioningDataConfig(train_pickle=path, few_shot_ratio=0.3, seed=30), "train")
    assert [r.captions[0] for r in few] == expected and len(expected) == 12
    cut = records_from_config(
        CaptioningDataConfig(train_pickle=path, few_shot_ratio=0.3, seed=30, train_size=5), "train"
    )
    assert [r.captions[0] for r in cut] == expected[:5]
    whole = records_from_config(CaptioningDataConfig(train_pickle=path), "train")
    assert len(whole) == 40
    with pytest.raises(CaptionDataError, match=r"data\.train_size=41, but there are 40"):
        records_from_config(CaptioningDataConfig(train_pickle=path, train_size=41), "train")
    with pytest.raises(CaptionDataError, match=r"data\.few_shot_ratio must be in \(0, 1\]"):
        records_from_config(CaptioningDataConfig(train_pickle=path, few_shot_ratio=1.5), "train")


def test_the_cli_prints_an_unknown_layout_without_a_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.pickle", [{"caption": "A dog.", "features": [0.0] * 4}])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "trainwell", "train", str(ROOT / "configs/captioning/tiny.yaml")]
    result = subprocess.run(
        [*command, f"data.train_pickle={bad}", f"data.val_pickle={bad}", f"run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert f"data.train_pickle {bad}: entry 0 is dict; expected" in result.stderr


def test_a_truncated_pickle_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "train.pickle", text_features())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CaptionDataError, match=r"train\.pickle is not a readable pickle"):
        records_from_config(CaptioningDataConfig(train_pickle=str(path)), "train")
