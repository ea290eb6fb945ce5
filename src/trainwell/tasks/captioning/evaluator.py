"""The caption evaluator: generated token ids per dataset index, scored once over the whole validation set.

Per-sample results are the generated token ids, gathered by the engine from every process and checked for coverage
before :meth:`CaptionEvaluator.compute` runs on rank 0. With ``ragged=True`` they are a list of one int64 tensor per
sample (the task contract's ragged results, what the task uses); with ``ragged=False`` a ``(N, width)`` tensor
padded with ``-1``, ``width`` being the longest generation allowed, the same on every process (for engines that
gather only dense tensors). :meth:`~CaptionEvaluator.load_results` accepts both. CIDEr-D's
document frequencies depend on every reference, which is why scoring waits for the gathered set; the references
come from the validation records the task hands over when it builds the evaluator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from trainwell.tasks.captioning.checks import check_generations, metric_skipped
from trainwell.tasks.captioning.datasets import CaptionRecord
from trainwell.tasks.captioning.java_scorers import java_metrics
from trainwell.tasks.captioning.scoring import caption_metrics, entity_recall
from trainwell.tasks.captioning.tokenizer import CaptionTokenizer


class CaptionEvaluator:
    """``update(indices, token_ids)`` per batch; ``compute()`` decodes and scores BLEU-1…4, ROUGE-L, CIDEr-D,
    entity recall and the requested Java metrics (``java_metrics``: ``"meteor"``, ``"spice"``);
    ``save_outputs`` writes ``captions.json``. ``findings`` holds the findings of the last ``compute()``:
    empty/constant generations, and one per requested Java metric that could not run, saying why."""

    def __init__(
        self,
        tokenizer: CaptionTokenizer,
        records: Sequence[CaptionRecord],
        width: int,
        ragged: bool = False,
        java_metrics: Sequence[str] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.width = width
        self.ragged = ragged
        self.records = records
        self.java_metrics = tuple(java_metrics)
        self.findings: list = []
        self.captions: dict[int, str] = {}
        self.reset()

    def reset(self) -> None:
        self._indices: list[int] = []
        self._tokens: list[torch.Tensor] = []
        self.captions = {}

    def update(self, indices: torch.Tensor, token_ids: Sequence[torch.Tensor]) -> None:
        """``indices (B,)`` dataset indices and the ``B`` generated id sequences (no prompt, no EOS)."""
        if len(indices) != len(token_ids):
            raise ValueError(f"CaptionEvaluator.update(): {len(indices)} indices but {len(token_ids)} captions.")
        self._indices.extend(int(i) for i in indices.tolist())
        self._tokens.extend(t.detach().to("cpu", torch.long) for t in token_ids)

    def local_results(self) -> tuple[torch.Tensor, dict[str, list[torch.Tensor] | torch.Tensor]]:
        indices = torch.tensor(self._indices, dtype=torch.long)
        if self.ragged:
            return indices, {"tokens": list(self._tokens)}
        padded = torch.full((len(self._tokens), self.width), -1, dtype=torch.long)
        for row, ids in enumerate(self._tokens):
            if len(ids) > self.width:
                raise ValueError(f"A generated caption has {len(ids)} tokens, more than the width {self.width}.")
            padded[row, : len(ids)] = ids
        return indices, {"tokens": padded}

    def load_results(self, indices: torch.Tensor, results: dict[str, list[torch.Tensor] | torch.Tensor]) -> None:
        tokens = results["tokens"]
        self._indices = [int(i) for i in indices.tolist()]
        self._tokens = [row[row >= 0] for row in tokens]  # a padded row loses its -1s; a ragged one has none

    def decoded(self) -> dict[int, str]:
        """``{dataset index: caption}`` of the held results."""
        pairs = zip(self._indices, self._tokens, strict=True)
        return {index: self.tokenizer.decode(ids.tolist()) for index, ids in pairs}

    def compute(self) -> dict[str, float]:
        if not self._indices:
            raise ValueError("CaptionEvaluator.compute() called before any update().")
        self.captions = self.decoded()
        references = {index: list(self.records[index].captions) for index in self.captions}
        metrics = caption_metrics(self.captions, references)
        # compute() runs on rank 0 only: the JVMs of METEOR/SPICE start once per evaluation
        extra, skipped = java_metrics(self.captions, references, self.java_metrics)
        metrics.update(extra)
        indices = sorted(self.captions)
        if any(self.records[i].entities for i in indices):
            metrics["entity_recall"] = entity_recall(
                [self.captions[i] for i in indices], [self.records[i].entities for i in indices]
            )
        lengths = [len(self.captions[i].split()) for i in indices]
        metrics["caption_words"] = sum(lengths) / len(lengths)
        self.findings = check_generations([self.captions[i] for i in indices])
        self.findings += [metric_skipped(name, reason) for name, reason in skipped.items()]
        return metrics

    def save_outputs(self, out_dir: Path) -> list[Path]:
        """``out_dir/captions.json`` in COCO results format ``[{"image_id", "caption"}]``, by image id."""
        captions = self.captions or self.decoded()
        rows = sorted(
            ({"image_id": self.records[i].image_id, "caption": text} for i, text in captions.items()),
            key=lambda row: row["image_id"],
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "captions.json"
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return [path]
