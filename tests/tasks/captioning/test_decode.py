"""Greedy and beam decoding: beam size 1 is greedy, batching with left padding changes nothing, EOS stops."""

import torch
from captioning_helpers import first_batch, small_task

from trainwell.tasks.captioning.decode import beam_decode, greedy_decode


def prompt_of(task, batch):
    prompt_ids, prompt_mask, _ = task.text(batch, batch["entity_lengths"] > 0, with_caption=False)
    return torch.nn.functional.normalize(batch["features"], dim=-1), prompt_ids, prompt_mask


def trained_a_little(task, batch):
    """A few optimizer steps so that the model's distribution is not flat (ties would make argmax arbitrary)."""
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = task.compute_losses(model, batch)["token_ce"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_beam_size_one_is_greedy_and_padding_does_not_matter() -> None:
    task = small_task()
    batch = first_batch(task, "val", 6)
    model = trained_a_little(task, batch)
    features, ids, mask = prompt_of(task, batch)
    eos = task.tokenizer.eos_id
    greedy = greedy_decode(model, features, ids, mask, eos, 20)
    beam1 = beam_decode(model, features, ids, mask, eos, 20, beam_size=1)
    assert [g.tolist() for g in greedy] == [b.tolist() for b in beam1]
    assert any(len(g) > 0 for g in greedy)
    # each row alone (no padding) decodes the same as inside the left-padded batch
    for row in range(6):
        n = int(mask[row].sum())
        alone = greedy_decode(model, features[row : row + 1], ids[row : row + 1, :n], mask[row : row + 1, :n], eos, 20)
        assert alone[0].tolist() == greedy[row].tolist()
    assert all(eos not in g.tolist() for g in greedy)


def sequence_log_prob(model, feature, ids, mask, tokens, eos) -> float:
    """log p(tokens + EOS | prompt), by one full forward pass (no cache)."""
    n = int(mask.sum())
    text = torch.cat((ids[:n], torch.tensor([*tokens, eos], dtype=torch.long)))
    with torch.no_grad():
        log_probs = model(feature[None], text[None]).log_softmax(-1)[0]
    start = model.soft_prompt_length + n - 1
    return sum(float(log_probs[start + j, t]) for j, t in enumerate([*tokens, eos]))


def test_beam_search_finds_captions_at_least_as_likely_as_greedy() -> None:
    task = small_task()
    batch = first_batch(task, "val", 6)
    model = trained_a_little(task, batch)
    features, ids, mask = prompt_of(task, batch)
    eos = task.tokenizer.eos_id
    greedy = greedy_decode(model, features, ids, mask, eos, 20)
    beam = beam_decode(model, features, ids, mask, eos, 20, beam_size=4, length_penalty=0.0)
    for row in range(6):
        finished = len(greedy[row]) < 20
        if finished:  # with length_penalty 0 beam search maximises the summed log-probability
            g = sequence_log_prob(model, features[row], ids[row], mask[row], greedy[row].tolist(), eos)
            b = sequence_log_prob(model, features[row], ids[row], mask[row], beam[row].tolist(), eos)
            assert b >= g - 1e-4
