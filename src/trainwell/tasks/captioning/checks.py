"""Captioning checks for the training doctor: pure functions over token tensors and generated captions.

* padding counted in the loss — a label other than the ignore index at a padded input position (the ignore index
  not applied, or the pad id used as the label of padding);
* labels not shifted against the inputs — the label at position ``t`` equals the input at ``t`` (the model would
  learn to copy its input) instead of the input at ``t + 1``;
* empty or constant generations — evaluation captions that are empty, or (nearly) all the same sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from trainwell.doctor import Finding
from trainwell.tasks.captioning.tokenizer import IGNORE_INDEX

CONSTANT_SHARE = 0.5
"""Generations whose most common caption is more than this share of all captions are "constant"."""
EMPTY_SHARE = 0.1
"""More than this share of empty captions is reported."""


def check_padding_ignored(labels: torch.Tensor, attention_mask: torch.Tensor) -> Finding | None:
    """Labels ``(B, L)`` must be ``IGNORE_INDEX`` wherever ``attention_mask`` ``(B, L)`` marks padding."""
    counted = (attention_mask == 0) & (labels != IGNORE_INDEX)
    if not bool(counted.any()):
        return None
    share = float(counted.sum()) / max(int((labels != IGNORE_INDEX).sum()), 1)
    values = sorted(set(labels[counted].tolist()))[:5]
    return Finding(
        "captioning.padding_in_loss",
        "error",
        "Padding positions count in the token loss",
        f"{int(counted.sum())} padded positions carry a label other than the ignore index {IGNORE_INDEX} "
        f"({share:.0%} of the counted labels), label values {values}",
        f"Set the labels of padding to {IGNORE_INDEX} (or pass ignore_index=<the label used for padding> to "
        "cross_entropy); otherwise the loss rewards predicting padding and falls without the captions improving.",
    )


def check_labels_shifted(input_ids: torch.Tensor, labels: torch.Tensor) -> Finding | None:
    """Labels ``(B, L)`` must be the *next* inputs: ``labels[:, t] == input_ids[:, t + 1]`` where counted."""
    counted = labels[:, :-1] != IGNORE_INDEX
    if not bool(counted.any()):
        return None
    same = float((labels[:, :-1] == input_ids[:, :-1])[counted].double().mean())
    following = float((labels[:, :-1] == input_ids[:, 1:])[counted].double().mean())
    if same < 0.9 or following > 0.5:
        return None
    return Finding(
        "captioning.labels_not_shifted",
        "error",
        "Token labels are not shifted against the inputs",
        f"{same:.0%} of the counted labels equal the input token at the same position, {following:.0%} the next "
        "one: the model is taught to copy its input, and the loss falls to ~0 while it learns nothing",
        "Position t's logits predict token t + 1: labels[:, t] = input_ids[:, t + 1] (and the ignore index at the "
        "last position), or pass unshifted labels only to a model that shifts them itself (Hugging Face's labels=).",
    )


def check_generations(captions: Sequence[str]) -> list[Finding]:
    """Empty captions, or one caption for (nearly) every input: the model ignores its prefix or has collapsed."""
    if not captions:
        return []
    found = []
    empty = sum(not c.strip() for c in captions) / len(captions)
    if empty > EMPTY_SHARE:
        found.append(
            Finding(
                "captioning.empty_generations",
                "warning",
                "Many generated captions are empty",
                f"{empty:.0%} of {len(captions)} evaluation captions are empty (EOS generated first)",
                "Check that training captions end with EOS only once and that labels cover the caption tokens; "
                "early in training this is normal.",
            )
        )
    text, count = Counter(captions).most_common(1)[0]
    if len(captions) >= 4 and count / len(captions) > CONSTANT_SHARE:
        found.append(
            Finding(
                "captioning.constant_generations",
                "warning",
                "Generated captions are (nearly) all the same",
                f"{count} of {len(captions)} evaluation captions are {text!r}",
                "The model ignores its prefix: check that the features reach the mapping network (normalised, not "
                "all zeros), that the soft prompt is in the input, and the learning rate; early in training this "
                "is normal.",
            )
        )
    return found


def metric_skipped(name: str, reason: str) -> Finding:
    """A requested metric (``meteor``, ``spice``) that could not be computed, and why (never silently absent)."""
    return Finding(
        f"captioning.{name}_skipped",
        "info",
        f"{name.upper()} was not computed: {reason}",
        f"task.{name} is on (the default), so {name.upper()} was asked for; the metrics leave it out",
        f"Make it runnable (see the title), or set task.{name}: false to leave it out on purpose.",
    )
