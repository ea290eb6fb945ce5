"""The captioning task: ViECap-style entity-aware prefix captioning on trainwell.

Training (as ViECap's ``main.py``): the feature is L2-normalised, Gaussian noise of variance ``noise_variance``
is added and the result normalised again (noise injection, so that text features stand in for image features);
detected entities are dropped from the hard prompt with probability ``prob_of_random_mask``; the loss is the token
cross-entropy over the caption (EOS included unless ``eos_in_loss: false``), computed in fp32 with prompts and
padding ignored. The noise and the masks are drawn from torch's global RNG inside ``compute_losses``, whose state
the engine checkpoints, so a resumed run draws the same ones. Evaluation decodes (greedy or beam) from the clean
feature and every detected entity, and scores the whole validation set at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainwell.engine.amp import full_precision
from trainwell.engine.checkpoint.weights import ForeignWeights
from trainwell.engine.task import MetricSpec, Task, TaskCapabilityError, TaskConfig
from trainwell.tasks.captioning import readers
from trainwell.tasks.captioning.checks import check_labels_shifted, check_padding_ignored
from trainwell.tasks.captioning.data_config import CaptioningDataConfig
from trainwell.tasks.captioning.datasets import CaptionCollator, CaptionDataset, CaptionRecord, synthetic_records
from trainwell.tasks.captioning.decode import beam_decode, greedy_decode
from trainwell.tasks.captioning.evaluator import CaptionEvaluator
from trainwell.tasks.captioning.model import CaptionModel, CaptionModelConfig
from trainwell.tasks.captioning.prompts import (
    PromptTemplate,
    arrange,
    assemble_text,
    full_attention_mask,
    layout_index,
    next_token_labels,
)
from trainwell.tasks.captioning.tokenizer import (
    IGNORE_INDEX,
    TOKENIZER_FILE,
    CaptionTokenizer,
    load_tokenizer,
    require_language_model_dir,
    train_tokenizer,
)
from trainwell.tasks.captioning.viecap_format import read_viecap

Batch = dict[str, torch.Tensor]


def end_at_first_stop(ids: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """``ids`` (a CPU row of generated ids) up to and including the first id in ``stops``; all of it without one."""
    hits = torch.isin(ids, stops).nonzero()
    return ids[: int(hits[0]) + 1] if len(hits) else ids


@dataclass
class CaptioningTaskConfig(TaskConfig):
    """``task:`` section (ViECap's ``main.py`` option names where there is one)."""

    class_path: str = "trainwell.tasks.captioning:CaptioningTask"
    """Import path of the task class."""
    model: CaptionModelConfig = field(default_factory=CaptionModelConfig)
    """Mapping network and language model."""
    using_hard_prompt: bool = True
    """Build the entity-aware hard prompt from the detected entities (ViECap: ``--using_hard_prompt``)."""
    prompt_template: str = "There are {entities} in image."
    """The hard prompt; ``{entities}`` becomes ``"dog, bench"`` (``"something"`` when none is left)."""
    max_num_of_entities: int = 10
    """Detected entities kept per sample, in order, after removing duplicates."""
    random_mask: bool = True
    """Drop entities from the training hard prompt at random (ViECap: ``--random_mask``)."""
    prob_of_random_mask: float = 0.4
    """Chance that an entity is dropped."""
    noise_variance: float = 0.016
    """Variance of the Gaussian noise added to the normalised training features (0 = none)."""
    normalize_prefix: bool = True
    """L2-normalise the features before the mapping network."""
    tokenizer_vocab_size: int = 1024
    """Byte-level BPE size when the tokenizer is trained on the corpus (a small corpus saturates below this)."""
    max_caption_tokens: int = 60
    """Training captions are cut to this many tokens (then EOS)."""
    decode: Literal["greedy", "beam"] = "greedy"
    """Evaluation and ``predict`` decoding."""
    beam_size: int = 5
    """Beams of ``decode: beam``."""
    max_new_tokens: int = 48
    """Longest generated caption, in tokens."""
    eos_in_loss: bool = True
    """Train the end-of-text token (then decoding stops at it). ``false``: as ViECap, the loss leaves EOS out, and
    generated captions end after their first ``.`` (ViECap's stop token); see docs/captioning.md."""
    meteor: bool = True
    """Score METEOR with pycocoevalcap's Java scorer (needs ``java`` on PATH; 7–8 s of CPU per evaluation, rank 0)."""
    spice: bool = True
    """Score SPICE with pycocoevalcap's Java scorer (needs its Stanford CoreNLP 3.6.0 jars; never downloaded)."""


class CaptioningTask(Task):
    """Prefix captioning: CLIP-like feature + detected entities → caption, scored with BLEU/ROUGE-L/CIDEr-D."""

    Config = CaptioningTaskConfig
    DataConfig = CaptioningDataConfig
    cfg: CaptioningTaskConfig
    data_cfg: CaptioningDataConfig

    def __init__(self, cfg: CaptioningTaskConfig, data_cfg: CaptioningDataConfig) -> None:
        super().__init__(cfg, data_cfg)
        self._records: dict[str, list[CaptionRecord]] = {}
        self._tokenizer: CaptionTokenizer | None = None
        self._template: PromptTemplate | None = None

    # -- data and tokenizer ------------------------------------------------------------------------
    def records(self, split: str) -> list[CaptionRecord]:
        """The ``"train"`` or ``"val"`` records (synthetic, or read from the configured files), built once."""
        if split not in self._records:
            d = self.data_cfg
            if d.train_pickle:
                self._records[split] = readers.records_from_config(d, split)
            elif split == "train":
                made = synthetic_records(d, "train", 20_000 if d.train_size is None else d.train_size, 1)
                self._records[split] = readers.training_subset(made, d.few_shot_ratio, d.seed, None)
            else:
                size = d.test_size if split == "test" else 500 if d.val_size is None else d.val_size
                self._records[split] = synthetic_records(d, split, size, d.references_per_image)
        return self._records[split]

    @property
    def tokenizer(self) -> CaptionTokenizer:
        """The language model directory's tokenizer, the run directory's, or one trained on the train captions
        (then saved to the run directory, which makes a checkpoint plus its run directory an inference bundle)."""
        if self._tokenizer is None:
            if self.cfg.model.language_model:
                self._tokenizer = load_tokenizer(require_language_model_dir(self.cfg.model.language_model))
            elif self.run_dir is not None and (self.run_dir / TOKENIZER_FILE).is_file():
                self._tokenizer = load_tokenizer(self.run_dir)
            else:
                captions = [r.captions[0] for r in self.records("train") if r.captions]
                self._tokenizer = train_tokenizer(captions, self.cfg.tokenizer_vocab_size)
                if self.run_dir is not None:
                    self._tokenizer.save(self.run_dir)
        return self._tokenizer

    @property
    def template(self) -> PromptTemplate:
        if self._template is None:
            if self.cfg.using_hard_prompt:
                self._template = PromptTemplate.build(self.tokenizer, self.cfg.prompt_template)
            else:
                self._template = PromptTemplate((), (), (), ())
        return self._template

    def _dataset(self, split: str) -> CaptionDataset:
        return CaptionDataset(
            self.records(split), self.tokenizer, self.cfg.max_num_of_entities, self.cfg.max_caption_tokens
        )

    def build_datasets(self) -> tuple[CaptionDataset, CaptionDataset]:
        return self._dataset("train"), self._dataset("val")

    def build_model(self) -> CaptionModel:
        tok = self.tokenizer
        model = CaptionModel(self.cfg.model, tok.vocab_size, tok.eos_id)
        if self.cfg.model.only_hard_prompt and self.cfg.using_hard_prompt:
            # the soft prompt never reaches GPT-2: no gradient ever (as in ViECap), and DDP must not wait for one
            model.mapping_network.requires_grad_(False)
        return model

    def foreign_weights(self, payload: dict[str, Any]) -> ForeignWeights | None:
        """``--init-from`` a ViECap ``coco_prefix-00N.pt``, a ``ClipCaptionModel`` state dict (see .viecap_format)."""
        return read_viecap(payload)

    def collate_fn(self) -> CaptionCollator:
        return CaptionCollator(self.tokenizer.pad_id)

    def build_test_dataset(self) -> CaptionDataset:
        if self.data_cfg.train_pickle:
            raise TaskCapabilityError(
                "trainwell test reads the synthetic corpus's test split; with ViECap/COCO files, score the test "
                "pickle with `trainwell eval CONFIG --checkpoint C data.val_pickle=<test pickle>`."
            )
        return self._dataset("test")

    def build_test_evaluator(self, dataset: Any) -> CaptionEvaluator:
        return CaptionEvaluator(self.tokenizer, self.records("test"), width=self.cfg.max_new_tokens, ragged=True)

    def build_evaluator(self) -> CaptionEvaluator:
        java = [name for name in ("meteor", "spice") if getattr(self.cfg, name)]
        return CaptionEvaluator(
            self.tokenizer, self.records("val"), width=self.cfg.max_new_tokens, ragged=True, java_metrics=java
        )

    # -- sequences ---------------------------------------------------------------------------------
    def _features(self, batch: Batch, *, noise: bool) -> torch.Tensor:
        features = batch["features"].float()
        if self.cfg.normalize_prefix:
            features = F.normalize(features, dim=-1)
        if noise and self.cfg.noise_variance > 0:
            # ViECap's noise injection: normalise, add N(0, variance), normalise again (global RNG: resumable)
            features = F.normalize(features, dim=-1)
            features = F.normalize(features + torch.randn_like(features) * math.sqrt(self.cfg.noise_variance), dim=-1)
        return features

    def text(self, batch: Batch, keep: torch.Tensor, *, with_caption: bool = True) -> tuple[torch.Tensor, ...]:
        """``(text_ids, text_mask, is_caption)`` of hard prompt (kept entities) + caption (see :mod:`.prompts`)."""
        keep = keep if self.cfg.using_hard_prompt else torch.zeros_like(keep)
        caption_lengths = batch["caption_lengths"] if with_caption else torch.zeros_like(batch["caption_lengths"])
        return assemble_text(
            self.template,
            batch["entity_ids"],
            batch["entity_lengths"],
            keep,
            batch["caption_ids"],
            caption_lengths,
            self.tokenizer.pad_id,
        )

    def hard_prompt_lengths(self, text_mask: torch.Tensor, is_caption: torch.Tensor) -> torch.Tensor | None:
        """Hard-prompt tokens at the start of each row ``(B,)``, or ``None`` without hard prompts (ViECap passes
        ``hard_prompts_length`` only with ``--using_hard_prompt``)."""
        if not self.cfg.using_hard_prompt:
            return None
        return (text_mask.bool() & ~is_caption).sum(dim=1)

    def layout(self, text_mask: torch.Tensor, is_caption: torch.Tensor) -> torch.Tensor:
        """The model's input layout ``(B, L)`` of soft prompt and text (:func:`.prompts.layout_index`)."""
        m = self.cfg.model
        return layout_index(
            text_mask.shape[0],
            m.continuous_prompt_length,
            text_mask.shape[1],
            self.hard_prompt_lengths(text_mask, is_caption),
            soft_prompt_first=m.soft_prompt_first,
            only_hard_prompt=m.only_hard_prompt,
            device=text_mask.device,
        )

    def labels(self, text_ids: torch.Tensor, text_mask: torch.Tensor, is_caption: torch.Tensor) -> torch.Tensor:
        """The token labels the loss trains on, ``(B, L)`` in the model's layout (the one place both the loss and
        the doctor's padding and shift checks read them): the next caption token, ``IGNORE_INDEX`` elsewhere."""
        soft, index = self.cfg.model.continuous_prompt_length, self.layout(text_mask, is_caption)
        labels = next_token_labels(text_ids, is_caption, soft, index)
        if not self.cfg.eos_in_loss:  # ViECap sets the labels that are EOS to its ignored value
            labels = labels.masked_fill(labels == self.tokenizer.eos_id, IGNORE_INDEX)
        return labels

    def compute_losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        features = self._features(batch, noise=True)
        present = batch["entity_lengths"] > 0
        # Drawn every step (even with random_mask off) so that the RNG streams do not depend on the option.
        drop = torch.rand(present.shape, device=present.device) < self.cfg.prob_of_random_mask
        keep = present & ~drop if self.cfg.random_mask else present
        text_ids, text_mask, is_caption = self.text(batch, keep)
        soft = self.cfg.model.continuous_prompt_length
        labels = self.labels(text_ids, text_mask, is_caption)
        mask = full_attention_mask(text_mask, soft, self.layout(text_mask, is_caption))
        logits = model(features, text_ids, mask, self.hard_prompt_lengths(text_mask, is_caption))
        with full_precision():  # the cross-entropy in fp32 under bf16/fp16 autocast, as ViECap
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return {"token_ce": loss}

    # -- evaluation and inference --------------------------------------------------------------------
    def generate(self, model: nn.Module, batch: Batch) -> list[torch.Tensor]:
        """Caption token ids (no prompt, no EOS) for every row of ``batch``, every detected entity in the prompt."""
        inner: CaptionModel = getattr(model, "module", model)
        prompt_ids, prompt_mask, is_caption = self.text(batch, batch["entity_lengths"] > 0, with_caption=False)
        hard = self.hard_prompt_lengths(prompt_mask, is_caption)
        features = self._features(batch, noise=False)
        eos, steps = self.tokenizer.eos_id, self.cfg.max_new_tokens
        if self.cfg.decode == "beam":
            size = self.cfg.beam_size
            ids = beam_decode(inner, features, prompt_ids, prompt_mask, eos, steps, size, hard_prompt_lengths=hard)
        else:
            ids = greedy_decode(inner, features, prompt_ids, prompt_mask, eos, steps, hard_prompt_lengths=hard)
        if self.cfg.eos_in_loss:
            return ids
        # a model that never learnt EOS ends its caption with the first full stop, as ViECap's search stops there
        stops = torch.tensor(self.tokenizer.sentence_end_ids)
        return [end_at_first_stop(row, stops) for row in ids]

    def eval_step(self, model: nn.Module, batch: Batch, indices: torch.Tensor, evaluator: CaptionEvaluator) -> None:  # type: ignore[override]
        evaluator.update(indices, self.generate(model, batch))

    def metric_names(self) -> set[str]:
        # caption_metrics' six scores, the mean caption length, and entity recall (every record of the synthetic set
        # and of ViECap's pickles carries its entities).
        return {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d", "caption_words", "entity_recall"}

    def metric_specs(self) -> dict[str, MetricSpec]:
        fraction = MetricSpec(higher_is_better=True, plausible=(0.0, 1.0))
        specs = {f"bleu_{n}": fraction for n in range(1, 5)}
        specs.update(
            rouge_l=fraction,
            entity_recall=fraction,
            meteor=fraction,
            spice=fraction,
            cider_d=MetricSpec(higher_is_better=True, plausible=(0.0, 10.0)),
        )
        specs["caption_words"] = MetricSpec(unit="words", higher_is_better=True, plausible=(1.0, 100.0))
        return specs

    def check_batch(self, batch: Batch) -> list[Any]:
        """Padding ignored by the loss and labels shifted, on the sequences this batch trains (:mod:`.checks`)."""
        text_ids, text_mask, is_caption = self.text(batch, batch["entity_lengths"] > 0)
        soft, index = self.cfg.model.continuous_prompt_length, self.layout(text_mask, is_caption)
        labels = self.labels(text_ids, text_mask, is_caption)
        mask = full_attention_mask(text_mask, soft, index)
        inputs = arrange(index, torch.full_like(text_ids[:, :1], IGNORE_INDEX).expand(-1, soft), text_ids)
        found = [check_padding_ignored(labels, mask), check_labels_shifted(inputs, labels)]
        return [f for f in found if f is not None]

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> list[dict[str, Any]]:
        """Caption the features (and detected entities) in ``input_path``: JSON ``{"features": [D floats],
        "entities": [str]}`` or a list of them, or ``.npy`` of shape ``(D,)`` / ``(N, D)`` (no entities)."""
        items = readers.read_prediction_inputs(input_path, self.cfg.model.clip_hidden_size)
        records = [CaptionRecord(i, feats, tuple(ents), ()) for i, (feats, ents) in enumerate(items)]
        dataset = CaptionDataset(records, self.tokenizer, self.cfg.max_num_of_entities, self.cfg.max_caption_tokens)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in self.collate_fn()([dataset[i] for i in range(len(dataset))]).items()}
        captions = [self.tokenizer.decode(ids.tolist()) for ids in self.generate(model, batch)]
        results = [
            {"image_id": i, "caption": text, "entities": list(ents)}
            for i, (text, (_, ents)) in enumerate(zip(captions, items, strict=True))
        ]
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            rows = [{"image_id": r["image_id"], "caption": r["caption"]} for r in results]
            (out_dir / "captions.json").write_text(json.dumps(rows, indent=1) + "\n")
        return results
