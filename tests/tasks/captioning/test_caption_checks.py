"""Doctor checks: padding in the loss, unshifted labels, empty/constant generations — planted and healthy."""

import torch
from captioning_helpers import first_batch, small_task

from trainwell.tasks.captioning.checks import check_generations, check_labels_shifted, check_padding_ignored
from trainwell.tasks.captioning.prompts import full_attention_mask, next_token_labels
from trainwell.tasks.captioning.tokenizer import IGNORE_INDEX


def sequences(task, batch):
    text_ids, text_mask, is_caption = task.text(batch, batch["entity_lengths"] > 0)
    soft = task.cfg.model.continuous_prompt_length
    inputs = torch.cat((torch.full((text_ids.shape[0], soft), IGNORE_INDEX), text_ids), dim=1)
    return inputs, next_token_labels(text_ids, is_caption, soft), full_attention_mask(text_mask, soft), is_caption


def test_a_healthy_batch_has_no_findings() -> None:
    task = small_task()
    assert task.check_batch(first_batch(task)) == []


def test_padding_counted_in_the_loss_is_found() -> None:
    task = small_task()
    _inputs, labels, mask, _ = sequences(task, first_batch(task))
    assert check_padding_ignored(labels, mask) is None
    # the classic mistake: labels = the padded ids (pad id where the ignore index belongs)
    planted = torch.where(mask.bool(), labels, torch.full_like(labels, task.tokenizer.pad_id))
    finding = check_padding_ignored(planted, mask)
    assert finding is not None and finding.id == "captioning.padding_in_loss" and finding.severity == "error"


def test_unshifted_labels_are_found() -> None:
    task = small_task()
    inputs, labels, _mask, _ = sequences(task, first_batch(task))
    assert check_labels_shifted(inputs, labels) is None
    # the shift forgotten: each counted label is the input at its own position
    planted = torch.where(labels != IGNORE_INDEX, inputs, labels)
    finding = check_labels_shifted(inputs, planted)
    assert finding is not None and finding.id == "captioning.labels_not_shifted"


def test_empty_and_constant_generations() -> None:
    assert check_generations(["a dog.", "a cat.", "a bus.", "a tree."]) == []
    constant = check_generations(["a dog."] * 9 + ["a cat."])
    assert [f.id for f in constant] == ["captioning.constant_generations"]
    empty = check_generations(["", "", "a dog.", "a cat.", "a bus."])
    assert [f.id for f in empty] == ["captioning.empty_generations"]
