"""The byte-level BPE: round trip, special ids, save/load, and a GPT-2 style vocab.json + merges.txt directory."""

import json
from pathlib import Path

from trainwell.tasks.captioning.tokenizer import load_tokenizer, train_tokenizer

TEXTS = ["A red dog on a bench.", "A kitten near a tree and the tree behind a bus.", "There is an old car."] * 20


def test_round_trip_and_special_ids(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 1, 1)
    for text in [*TEXTS[:3], "Unseen wörds & symbols: 3.5%!"]:
        ids = tokenizer.encode(text)
        assert tokenizer.pad_id not in ids and tokenizer.eos_id not in ids
        assert tokenizer.decode(ids) == text
    # decoding stops at EOS and skips padding
    ids = tokenizer.encode("A red dog.")
    assert tokenizer.decode([*ids, tokenizer.eos_id, *tokenizer.encode(" junk")]) == "A red dog."
    assert tokenizer.decode([tokenizer.pad_id, *ids, tokenizer.pad_id]) == "A red dog."
    # a frequent word is one token (BPE merges were learnt)
    assert len(tokenizer.encode(" kitten")) == 1
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1]) and loaded.vocab_size == tokenizer.vocab_size


def test_training_is_deterministic() -> None:
    assert train_tokenizer(TEXTS, 400).backend.to_str() == train_tokenizer(TEXTS, 400).backend.to_str()


def test_gpt2_style_directory(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    model = json.loads(tokenizer.backend.to_str())["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(TEXTS[0]) == tokenizer.encode(TEXTS[0])
    assert loaded.decode(loaded.encode(TEXTS[0])) == TEXTS[0]
