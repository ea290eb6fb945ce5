"""The caption tokenizer: a byte-level BPE (GPT-2's scheme) trained on the corpus with Hugging Face ``tokenizers``,
or the own tokenizer of a local pretrained language-model directory.

A trained tokenizer is saved as ``tokenizer.json`` in the run directory, so a checkpoint plus its run directory is a
complete inference bundle; a run that finds one there (a resumed run, ``trainwell eval``/``predict``) loads it
instead of training again. Special tokens: ``<|pad|>`` (id 0, only ever an input position that is masked out) and
``<|endoftext|>`` (id 1), which is both BOS and EOS as in GPT-2. A pretrained GPT-2 directory has no pad token; its
EOS is used as padding there (padding never reaches the loss: labels use :data:`IGNORE_INDEX`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from trainwell.config.loader import ConfigError

PAD = "<|pad|>"
EOS = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
IGNORE_INDEX = -100
"""Label of positions that do not count in the loss (padding, prompts); ``F.cross_entropy``'s default."""


class CaptionTokenizer:
    """Byte-level BPE with a pad id and one BOS/EOS id; wraps a ``tokenizers.Tokenizer``."""

    def __init__(self, tokenizer: Any, pad_token: str = PAD, eos_token: str = EOS) -> None:
        self.backend = tokenizer
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise ValueError(f"The tokenizer has no {eos_token!r} token; byte-level GPT-2 tokenizers must have one.")
        pad_id = tokenizer.token_to_id(pad_token)
        self.eos_id: int = int(eos_id)
        self.bos_id: int = int(eos_id)
        self.pad_id: int = int(pad_id) if pad_id is not None else self.eos_id

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary, special tokens included (the language model's embedding rows)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added)."""
        return [list(e.ids) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    @property
    def sentence_end_ids(self) -> tuple[int, ...]:
        """The ids that end a sentence for ViECap's decoding (the last token of ``"."`` and of ``" ."``)."""
        return tuple(dict.fromkeys(self.encode(text)[-1] for text in (".", " .")))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` up to the first EOS, padding and special tokens skipped, surrounding spaces stripped."""
        kept = []
        for token in ids:
            if int(token) == self.eos_id:
                break
            if int(token) != self.pad_id:
                kept.append(int(token))
        return self.backend.decode(kept, skip_special_tokens=True).strip()

    def save(self, directory: Path) -> Path:
        """Write ``directory/tokenizer.json`` atomically (processes that race write identical files)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        tmp = directory / f".{TOKENIZER_FILE}.{os.getpid()}.tmp"
        self.backend.save(str(tmp))
        os.replace(tmp, path)
        return path


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> CaptionTokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` tokens on ``texts`` (deterministic for a given order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown token needed
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return CaptionTokenizer(backend)


def load_tokenizer(directory: Path) -> CaptionTokenizer:
    """The tokenizer saved in ``directory``: ``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = directory / TOKENIZER_FILE
    if path.is_file():
        return CaptionTokenizer(Tokenizer.from_file(str(path)))
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if vocab.is_file() and merges.is_file():
        backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return CaptionTokenizer(backend)
    raise FileNotFoundError(
        f"No tokenizer in {directory}: expected {TOKENIZER_FILE} (Hugging Face fast tokenizer) or vocab.json + "
        "merges.txt (GPT-2). Save the language model's tokenizer there with tokenizer.save_pretrained(dir)."
    )


LANGUAGE_MODEL_FILES = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"),
    (TOKENIZER_FILE, "vocab.json"),
)
"""What a local GPT-2 directory must hold: each group is one requirement, met by any one of its files
(``vocab.json`` also needs ``merges.txt``)."""


def require_language_model_dir(value: str) -> Path:
    """``task.model.language_model`` as a local GPT-2 directory that holds its config, weights and tokenizer.

    Nothing is downloaded at run time, so a hub name such as ViECap's default ``gpt2`` is not resolved: the error
    names the directory looked at, the files missing there, and how to save them once.
    """
    path = Path(value).expanduser().absolute()
    missing = [" or ".join(group) for group in LANGUAGE_MODEL_FILES if not any((path / f).is_file() for f in group)]
    if (
        (path / "vocab.json").is_file()
        and not (path / TOKENIZER_FILE).is_file()
        and not (path / "merges.txt").is_file()
    ):
        missing.append("merges.txt (with vocab.json)")
    if not missing:
        return path
    where = f"{path} has no {'; no '.join(missing)}" if path.is_dir() else f"{path} is not a directory"
    raise ConfigError(
        f"task.model.language_model={value!r} must be a local directory holding GPT-2's config.json, its weights "
        f"(model.safetensors or pytorch_model.bin) and its tokenizer (tokenizer.json, or vocab.json + merges.txt); "
        f"{where}. Nothing is downloaded at run time (a hub name like 'gpt2' is not looked up): save them once "
        "where the hub is reachable, e.g. GPT2LMHeadModel.from_pretrained('gpt2').save_pretrained(DIR) and "
        "GPT2TokenizerFast.from_pretrained('gpt2').save_pretrained(DIR), then set task.model.language_model: DIR."
    )
