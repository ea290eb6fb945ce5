"""Greedy and beam-search decoding from a soft prompt + hard prompt, with GPT-2's key/value cache.

Prompts of different lengths are batched by *left* padding (``[pad][soft prompt][hard prompt]``, or another layout
of the model's prompt options) with position ids counted over the real tokens only, so every row sees the positions
it saw in training and the next token of all rows is read from the last column. Decoding stops at EOS (the
tokenizer's ``<|endoftext|>``); the returned ids exclude the prompt and the EOS.
"""

from __future__ import annotations

import torch

from trainwell.tasks.captioning.model import CaptionModel
from trainwell.tasks.captioning.prompts import arrange


def left_padded_prompt(
    model: CaptionModel,
    features: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    hard_prompt_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(embeddings (B, L, width), attention_mask (B, L), position_ids (B, L))`` of the prompt, left-padded.

    ``prompt_ids``/``prompt_mask`` ``(B, H)`` are right-padded hard prompts of ``hard_prompt_lengths`` tokens
    (``None``: no hard prompt); the model's prompt options order soft and hard prompt (``L = soft + H``, or ``H``
    with ``only_hard_prompt``), with the padding last, then moved to the left.
    """
    embeddings = model.input_embeddings(features, prompt_ids, hard_prompt_lengths)
    index = model.layout_index(prompt_ids, hard_prompt_lengths)
    soft = torch.ones(prompt_mask.shape[0], model.soft_prompt_length, dtype=torch.long, device=prompt_mask.device)
    mask = arrange(index, soft, prompt_mask.long())
    length = mask.shape[1]
    shift = length - mask.sum(dim=1, keepdim=True)  # padding per row, moved from the right to the left
    index = (torch.arange(length, device=mask.device)[None] - shift) % length
    embeddings = embeddings.gather(1, index[..., None].expand_as(embeddings))
    mask = mask.gather(1, index)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return embeddings, mask, positions


def _step(model: CaptionModel, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object):
    """Feed one token per row ``(N,)``; returns log-probabilities ``(N, V)`` in fp32 and the cache."""
    logits, cache = model.lm_cached(model.embed_tokens(tokens[:, None]), mask, positions[:, None], cache)
    return logits[:, -1].float().log_softmax(dim=-1), cache


@torch.no_grad()
def greedy_decode(
    model: CaptionModel,
    features: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_id: int,
    max_new_tokens: int,
    hard_prompt_lengths: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """The most likely token at every step, per row; returns ``B`` int64 CPU tensors (no EOS, no prompt)."""
    embeddings, mask, positions = left_padded_prompt(model, features, prompt_ids, prompt_mask, hard_prompt_lengths)
    logits, cache = model.lm_cached(embeddings, mask, positions)
    log_probs = logits[:, -1].float().log_softmax(dim=-1)
    batch = features.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
    position = positions[:, -1]
    generated = []
    for _ in range(max_new_tokens):
        token = log_probs.argmax(dim=-1).masked_fill(finished, eos_id)
        generated.append(token)
        finished = finished | (token == eos_id)
        if bool(finished.all()):  # host sync once per generated token, only in evaluation
            break
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        position = position + 1
        log_probs, cache = _step(model, token, mask, position, cache)
    return _strip(torch.stack(generated, dim=1), eos_id)


@torch.no_grad()
def beam_decode(
    model: CaptionModel,
    features: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_id: int,
    max_new_tokens: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    hard_prompt_lengths: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Beam search: ``beam_size`` hypotheses per row, ranked while searching by their summed log-probability and
    at the end by ``sum / length ** length_penalty`` (1.0: the mean, as ViECap's beam search). A finished beam
    only extends with EOS at no cost. With ``beam_size=1`` this is greedy decoding."""
    embeddings, mask, positions = left_padded_prompt(model, features, prompt_ids, prompt_mask, hard_prompt_lengths)
    logits, cache = model.lm_cached(embeddings, mask, positions)
    log_probs = logits[:, -1].float().log_softmax(dim=-1)
    batch, vocab, k = features.shape[0], log_probs.shape[-1], beam_size
    device = features.device
    scores, tokens = log_probs.topk(k, dim=-1)  # (B, K)
    history = tokens.reshape(batch * k, 1)
    scores = scores.reshape(batch * k)
    finished = history[:, 0] == eos_id
    lengths = torch.ones(batch * k, device=device)
    cache.batch_repeat_interleave(k)
    mask = mask.repeat_interleave(k, dim=0)
    position = positions[:, -1].repeat_interleave(k, dim=0)
    offsets = (torch.arange(batch, device=device) * k)[:, None]
    for _ in range(max_new_tokens - 1):
        if bool(finished.all()):  # host sync once per generated token, only in evaluation
            break
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        position = position + 1
        log_probs, cache = _step(model, history[:, -1], mask, position, cache)
        eos_only = torch.full_like(log_probs, float("-inf"))
        eos_only[:, eos_id] = 0.0
        log_probs = torch.where(finished[:, None], eos_only, log_probs)
        candidates = (scores[:, None] + log_probs).view(batch, k * vocab)
        scores, flat = candidates.topk(k, dim=-1)  # (B, K)
        rows = (offsets + torch.div(flat, vocab, rounding_mode="floor")).reshape(-1)
        token = (flat % vocab).reshape(-1)
        cache.reorder_cache(rows)
        mask, position = mask[rows], position[rows]
        lengths = lengths[rows] + (~finished[rows]).float()
        finished = finished[rows] | (token == eos_id)
        history = torch.cat((history[rows], token[:, None]), dim=1)
        scores = scores.reshape(-1)
    # A finished beam's length counts its EOS; an unfinished one's all its tokens.
    normalised = (scores / lengths.pow(length_penalty)).view(batch, k)
    best = offsets[:, 0] + normalised.argmax(dim=-1)
    return _strip(history[best], eos_id)


def _strip(ids: torch.Tensor, eos_id: int) -> list[torch.Tensor]:
    """Rows of ``(B, T)`` cut before their first EOS, as int64 CPU tensors."""
    out = []
    for row in ids.cpu():
        ends = (row == eos_id).nonzero()
        out.append(row[: int(ends[0]) if len(ends) else len(row)].clone())
    return out
