"""``task.eos_in_loss: false``: the loss leaves the end-of-text token out (as ViECap trains), and generated captions
end at their first full stop (as ViECap's search stops there)."""

import pytest
import torch
from captioning_helpers import first_batch, small_task
from torch import nn

from trainwell.tasks.captioning.task import end_at_first_stop


class FixedLogits(nn.Module):
    """Logits drawn once from a seeded generator for every (row, position, token): a model whose every output is
    known to the test, whatever the sequence layout."""

    def __init__(self, rows: int, soft: int, vocab: int) -> None:
        super().__init__()
        self.soft = soft
        self.logits = nn.Parameter(torch.randn(rows, soft + 200, vocab, generator=torch.Generator().manual_seed(3)))

    def forward(self, features, text_ids, *args, **kwargs):
        return self.logits[:, : self.soft + text_ids.shape[1]]


def reference_loss(task, batch, logits: torch.Tensor, with_eos: bool) -> float:
    """Mean -log p of each caption token at the position before it, read from the caption ids of the batch: the
    caption follows the hard prompt and the soft prompt; its last token is EOS, left out unless ``with_eos``."""
    soft = task.cfg.model.continuous_prompt_length
    log_probs = logits.log_softmax(-1)
    total, count = 0.0, 0
    for b in range(batch["caption_ids"].shape[0]):
        entities = [
            batch["entity_ids"][b, k, : batch["entity_lengths"][b, k]].tolist()
            for k in range(batch["entity_ids"].shape[1])
            if batch["entity_lengths"][b, k] > 0
        ]
        prompt = task.template.ids(entities)
        caption = batch["caption_ids"][b, : batch["caption_lengths"][b]].tolist()
        assert caption[-1] == task.tokenizer.eos_id and task.tokenizer.eos_id not in caption[:-1]
        for j, token in enumerate(caption if with_eos else caption[:-1]):
            total -= float(log_probs[b, soft + len(prompt) + j - 1, token])
            count += 1
    return total / count


@pytest.mark.parametrize("eos_in_loss", [True, False])
def test_the_loss_leaves_eos_out_when_asked(eos_in_loss: bool) -> None:
    task = small_task(noise_variance=0.0, random_mask=False, eos_in_loss=eos_in_loss)
    batch = first_batch(task)
    soft = task.cfg.model.continuous_prompt_length
    model = FixedLogits(batch["caption_ids"].shape[0], soft, task.tokenizer.vocab_size)
    loss = float(task.compute_losses(model, batch)["token_ce"].detach())
    with torch.no_grad():
        expected = reference_loss(task, batch, model.logits, with_eos=eos_in_loss)
        other = reference_loss(task, batch, model.logits, with_eos=not eos_in_loss)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert abs(expected - other) > 1e-3  # the two cases differ: the test tells them apart


def test_without_eos_in_the_loss_captions_end_at_the_first_full_stop() -> None:
    stops = torch.tensor([5, 9])
    assert end_at_first_stop(torch.tensor([3, 4, 9, 7, 5]), stops).tolist() == [3, 4, 9]
    assert end_at_first_stop(torch.tensor([3, 4, 7]), stops).tolist() == [3, 4, 7]
    task = small_task(eos_in_loss=False)
    (full_stop,) = task.tokenizer.sentence_end_ids  # "." and " ." end with the same token here
    assert task.tokenizer.decode([full_stop]) == "."
