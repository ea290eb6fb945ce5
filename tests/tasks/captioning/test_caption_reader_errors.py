"""Caption files that would train on something else than their captions are refused by file and entry index."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from trainwell.cli import main
from trainwell.engine.task import DataError
from trainwell.tasks.captioning.readers import read_coco_captions, read_viecap_pickle

CONFIG = "configs/captioning/tiny.yaml"


def _entries(n: int) -> list:
    rng = np.random.default_rng(0)
    return [[["dog"], f"A dog number {i}.", rng.standard_normal(512).astype(np.float16)] for i in range(n)]


@pytest.mark.parametrize("bad", [None, 3, "", "   "])
def test_cli_refuses_a_caption_that_is_not_text(bad: object, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    entries = _entries(6)
    entries[4][1] = bad  # str(None) would have trained as the text "None"
    (tmp_path / "train.pickle").write_bytes(pickle.dumps(entries))
    (tmp_path / "val.pickle").write_bytes(pickle.dumps(_entries(2)))
    run = tmp_path / "run"
    data = [f"data.root={tmp_path}", "data.train_pickle=train.pickle", "data.val_pickle=val.pickle"]
    assert main(["train", CONFIG, *data, f"run.dir={run}", "train.device=cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{tmp_path / 'train.pickle'} entry 4" in err and repr(bad) in err
    assert not list(run.glob("checkpoints/*.pt"))


def test_val_caption_none_is_named_too(tmp_path: Path) -> None:
    from trainwell.tasks.captioning.readers import records_from_config
    from trainwell.tasks.captioning.task import CaptioningDataConfig

    val = _entries(3)
    val[2][1] = None
    (tmp_path / "val.pickle").write_bytes(pickle.dumps(val))
    (tmp_path / "train.pickle").write_bytes(pickle.dumps(_entries(3)))
    cfg = CaptioningDataConfig(root=str(tmp_path), train_pickle="train.pickle", val_pickle="val.pickle")
    assert records_from_config(cfg, "train")[1].captions == ("A dog number 1.",)
    with pytest.raises(DataError, match=r"val\.pickle entry 2: .*NoneType"):
        records_from_config(cfg, "val")


def test_truncated_pickle_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.pickle"
    path.write_bytes(pickle.dumps(_entries(4))[:-40])
    with pytest.raises(DataError, match=rf"{path} is not a readable pickle"):
        read_viecap_pickle(path)


def test_coco_annotation_without_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "captions_val.json"
    coco = {
        "images": [{"id": 1}],
        "annotations": [{"image_id": 1, "caption": "A dog."}, {"image_id": 1, "caption": None}],
    }
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"captions_val\.json: annotations\[1\] needs 'image_id' and a non-empty"):
        read_coco_captions(path)
    path.write_text('{"annotations": [')
    with pytest.raises(DataError, match=rf"'{path}' is not valid JSON"):
        read_coco_captions(path)
