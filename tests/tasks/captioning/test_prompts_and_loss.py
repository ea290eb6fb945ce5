"""Hard-prompt assembly, next-token labels, and the token loss: padding ignored, labels shifted."""

import math

import pytest
import torch
from captioning_helpers import first_batch, small_task
from torch import nn

from trainwell.tasks.captioning.prompts import assemble_text, next_token_labels
from trainwell.tasks.captioning.tokenizer import IGNORE_INDEX


def rows_by_hand(task, batch, keep):
    """Each row's [hard prompt][caption] token list, built with plain Python from the template pieces."""
    out = []
    for b in range(batch["caption_ids"].shape[0]):
        entities = [
            batch["entity_ids"][b, k, : batch["entity_lengths"][b, k]].tolist()
            for k in range(batch["entity_ids"].shape[1])
            if keep[b, k] and batch["entity_lengths"][b, k] > 0
        ]
        caption = batch["caption_ids"][b, : batch["caption_lengths"][b]].tolist()
        out.append((task.template.ids(entities), caption))
    return out


def test_assembly_matches_the_template_and_keeps_captions_whole() -> None:
    task = small_task()
    batch = first_batch(task)
    keep = torch.rand(batch["entity_lengths"].shape, generator=torch.Generator().manual_seed(0)) < 0.5
    text_ids, text_mask, is_caption = task.text(batch, keep)
    for b, (prompt, caption) in enumerate(rows_by_hand(task, batch, keep)):
        n = len(prompt) + len(caption)
        assert text_ids[b, :n].tolist() == prompt + caption
        assert text_mask[b].tolist() == [1] * n + [0] * (text_ids.shape[1] - n)
        assert is_caption[b].tolist() == [False] * len(prompt) + [True] * len(caption) + [False] * (
            text_ids.shape[1] - n
        )
        assert (text_ids[b, n:] == task.tokenizer.pad_id).all()
    decoded = task.tokenizer.decode(task.template.ids([task.tokenizer.encode(" dog"), task.tokenizer.encode(" bus")]))
    assert decoded == "There are dog, bus in image."
    assert task.tokenizer.decode(task.template.ids([])) == "There are something in image."


def test_labels_are_the_next_caption_token() -> None:
    text = torch.tensor([[7, 8, 9, 10, 0]])
    is_caption = torch.tensor([[False, False, True, True, False]])
    labels = next_token_labels(text, is_caption, soft_length=2)
    # full sequence: [s, s, 7, 8, 9, 10, pad]; position t predicts t+1 where t+1 is a caption token
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 9, 10, IGNORE_INDEX, IGNORE_INDEX]]


def test_loss_is_the_masked_mean_over_caption_tokens() -> None:
    task = small_task(noise_variance=0.0, random_mask=False)
    batch = first_batch(task)
    torch.manual_seed(0)
    model = task.build_model().eval()
    loss = task.compute_losses(model, batch)["token_ce"].detach()
    # by hand: run the model on each row alone (no padding at all) and average -log p over the caption tokens
    soft = task.cfg.model.continuous_prompt_length
    total, count = 0.0, 0
    for b, (prompt, caption) in enumerate(rows_by_hand(task, batch, batch["entity_lengths"] > 0)):
        ids = torch.tensor([prompt + caption])
        with torch.no_grad():
            log_probs = model(batch["features"][b : b + 1] / batch["features"][b].norm(), ids).log_softmax(-1)[0]
        for j, token in enumerate(caption):
            position = soft + len(prompt) + j - 1  # the logits one position earlier predict this token
            total -= float(log_probs[position, token])
            count += 1
    assert float(loss) == pytest.approx(total / count, rel=1e-4)
    # more padding changes nothing
    padded = dict(batch)
    padded["caption_ids"] = torch.cat((batch["caption_ids"], torch.full((6, 5), task.tokenizer.pad_id)), dim=1)
    assert float(task.compute_losses(model, padded)["token_ce"].detach()) == pytest.approx(float(loss), rel=1e-5)


class Oracle(nn.Module):
    """Logits that put +20 on a chosen token per position: the next input token (shift=1) or the same (shift=0)."""

    def __init__(self, soft: int, vocab: int, shift: int) -> None:
        super().__init__()
        self.soft, self.vocab, self.shift = soft, vocab, shift
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, features, text_ids, attention_mask=None, hard_prompt_lengths=None):  # soft prompt first
        full = torch.cat((torch.zeros(text_ids.shape[0], self.soft, dtype=torch.long), text_ids), dim=1)
        target = torch.roll(full, -self.shift, dims=1)
        return 20.0 * nn.functional.one_hot(target, self.vocab).float() + self.dummy


def test_loss_is_shifted() -> None:
    task = small_task(noise_variance=0.0, random_mask=False)
    batch = first_batch(task)
    vocab, soft = task.tokenizer.vocab_size, task.cfg.model.continuous_prompt_length
    # a model that predicts the next token perfectly has (almost) no loss ...
    next_loss = float(task.compute_losses(Oracle(soft, vocab, shift=1), batch)["token_ce"].detach())
    assert next_loss == pytest.approx(math.log1p((vocab - 1) * math.exp(-20.0)), abs=1e-7)
    # ... a model that copies its input pays log(e^20 + V - 1) on each token that differs from the one before it
    copy_loss = float(task.compute_losses(Oracle(soft, vocab, shift=0), batch)["token_ce"].detach())
    hit, miss = math.log1p((vocab - 1) * math.exp(-20.0)), math.log(math.exp(20.0) + vocab - 1)
    expected = []
    for prompt, caption in rows_by_hand(task, batch, batch["entity_lengths"] > 0):
        sequence = prompt + caption
        for j in range(len(prompt), len(sequence)):
            expected.append(hit if sequence[j] == sequence[j - 1] else miss)
    assert copy_loss == pytest.approx(sum(expected) / len(expected), rel=1e-4)


def test_masking_and_noise_come_from_the_global_rng() -> None:
    task = small_task()
    batch = first_batch(task)
    torch.manual_seed(0)
    model = task.build_model()
    torch.manual_seed(5)
    a = task.compute_losses(model, batch)["token_ce"]
    torch.manual_seed(5)
    b = task.compute_losses(model, batch)["token_ce"]
    c = task.compute_losses(model, batch)["token_ce"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_fully_masked_prompt_says_something() -> None:
    task = small_task()
    batch = first_batch(task)
    none = torch.zeros_like(batch["entity_lengths"], dtype=torch.bool)
    text_ids, text_mask, _ = assemble_text(
        task.template,
        batch["entity_ids"],
        batch["entity_lengths"],
        none,
        batch["caption_ids"],
        batch["caption_lengths"],
        task.tokenizer.pad_id,
    )
    for b in range(text_ids.shape[0]):
        caption = batch["caption_ids"][b, : batch["caption_lengths"][b]].tolist()
        n = int(text_mask[b].sum())
        assert text_ids[b, :n].tolist() == task.template.ids([]) + caption
