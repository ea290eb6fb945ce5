"""The evaluator's scores and captions.json, the tokenizer saved with the run, and predict()."""

import json
from pathlib import Path

import pytest
import torch
from captioning_helpers import small_task

from trainwell.tasks.captioning.evaluator import CaptionEvaluator
from trainwell.tasks.captioning.scoring import caption_metrics, entity_recall


def test_evaluator_scores_the_decoded_captions_once_over_all_samples(tmp_path: Path) -> None:
    task = small_task(max_new_tokens=64)
    task.build_datasets()
    records = task.records("val")
    tok = task.tokenizer
    # "generate" the first reference of each image, in two shuffled halves (two processes' worth)
    tokens = [torch.tensor(tok.encode(r.captions[0])) for r in records]
    evaluator = task.build_evaluator()
    evaluator.reset()
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(0))
    for half in (order[: len(order) // 2], order[len(order) // 2 :]):
        evaluator.update(half, [tokens[i] for i in half])
    indices, results = evaluator.local_results()
    assert isinstance(results["tokens"], list) and len(results["tokens"]) == len(records)  # ragged
    sort = indices.argsort()
    evaluator.load_results(indices[sort], {"tokens": [results["tokens"][i] for i in sort.tolist()]})
    metrics = evaluator.compute()
    want = caption_metrics(
        {i: r.captions[0] for i, r in enumerate(records)}, {i: r.captions for i, r in enumerate(records)}
    )
    for name, value in want.items():
        assert metrics[name] == pytest.approx(value, rel=1e-9)
    assert metrics["entity_recall"] == 1.0  # a reference names every object
    assert metrics["bleu_4"] > 0.5
    # dense results (padded with -1 to a fixed width) give the same scores
    dense = CaptionEvaluator(tok, records, width=task.cfg.max_new_tokens, ragged=False)
    dense.update(torch.arange(len(records)), tokens)
    _, padded = dense.local_results()
    assert padded["tokens"].shape == (len(records), task.cfg.max_new_tokens)
    dense.load_results(torch.arange(len(records)), padded)
    assert dense.compute() == metrics
    (path,) = evaluator.save_outputs(tmp_path)
    rows = json.loads(path.read_text())
    assert path.name == "captions.json"
    assert rows == [{"image_id": r.image_id, "caption": r.captions[0]} for r in records]


def test_entity_recall_of_captions_missing_objects() -> None:
    task = small_task()
    records = task.records("val")
    evaluator = task.build_evaluator()
    nothing = [torch.tensor(task.tokenizer.encode("A thing."))] * len(records)
    evaluator.load_results(torch.arange(len(records)), {"tokens": nothing})
    metrics = evaluator.compute()
    assert metrics["entity_recall"] == 0.0
    assert entity_recall(["A thing."], [records[0].entities]) == 0.0
    assert [f.id for f in evaluator.findings] == ["captioning.constant_generations"]


def test_tokenizer_is_saved_with_the_run_and_reused(tmp_path: Path) -> None:
    task = small_task()
    task.run_dir = tmp_path
    vocab = task.tokenizer.vocab_size
    assert (tmp_path / "tokenizer.json").is_file()
    again = small_task(tokenizer_vocab_size=300)  # a different size: the saved tokenizer wins
    again.run_dir = tmp_path
    assert again.tokenizer.vocab_size == vocab
    assert again.tokenizer.encode("A red dog.") == task.tokenizer.encode("A red dog.")


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_predict_from_json(tmp_path: Path, decode: str) -> None:
    task = small_task(decode=decode, beam_size=3)
    model = task.build_model().eval()
    record = task.records("val")[0]
    (tmp_path / "in.json").write_text(
        json.dumps([{"features": record.features.astype(float).tolist(), "entities": list(record.detected)}] * 2)
    )
    with torch.no_grad():
        results = task.predict(model, tmp_path / "in.json", tmp_path / "out")
    assert len(results) == 2 and results[0]["caption"] == results[1]["caption"]
    assert results[0]["entities"] == list(record.detected)
    saved = json.loads((tmp_path / "out" / "captions.json").read_text())
    assert saved == [{"image_id": r["image_id"], "caption": r["caption"]} for r in results]
