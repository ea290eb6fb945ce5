"""Hard prompts from detected entities, the token layout of a training sequence, and its next-token labels.

ViECap's hard prompt is ``"There are dog, bench in image."`` (``"There are something in image."`` when no entity
is left). Entities are tokenised one by one with a leading space, so that masking one out (ViECap's random entity
masking, probability 0.4) only drops its tokens: the prompt is assembled from pre-tokenised pieces on the device,
with no re-tokenisation and no host sync per step (:func:`assemble_text`).

The text part of a sequence is ``[hard prompt][caption][EOS]`` right-padded; the full sequence puts the soft prompt
in front. Labels are the *next* token wherever that token belongs to the caption (EOS included), else
:data:`~trainwell.tasks.captioning.tokenizer.IGNORE_INDEX`: prompts and padding never count in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainwell.tasks.captioning.tokenizer import IGNORE_INDEX, CaptionTokenizer


@dataclass(frozen=True)
class PromptTemplate:
    """Token ids of the hard prompt's pieces: ``head + e1 + sep + e2 ... + tail``, ``nothing`` if no entity."""

    head: tuple[int, ...]
    sep: tuple[int, ...]
    tail: tuple[int, ...]
    nothing: tuple[int, ...]

    @classmethod
    def build(cls, tokenizer: CaptionTokenizer, template: str = "There are {entities} in image.") -> PromptTemplate:
        """Tokenise ``template`` (it must contain ``{entities}``) around the entity list."""
        if template.count("{entities}") != 1:
            raise ValueError(f"task.prompt_template must contain '{{entities}}' once; got {template!r}.")
        head, tail = template.split("{entities}")
        return cls(
            tuple(tokenizer.encode(head.rstrip())),
            tuple(tokenizer.encode(",")),
            tuple(tokenizer.encode(tail)),
            tuple(tokenizer.encode(" something")),
        )

    def ids(self, entity_ids: Sequence[Sequence[int]]) -> list[int]:
        """The hard prompt of these (tokenised, kept) entities, in order (for inference)."""
        out = list(self.head)
        if not entity_ids:
            out += self.nothing
        for k, ids in enumerate(entity_ids):
            out += (list(self.sep) if k else []) + list(ids)
        return out + list(self.tail)


def entity_token_ids(tokenizer: CaptionTokenizer, entities: Sequence[str]) -> list[list[int]]:
    """Each entity's tokens with a leading space (GPT-2 tokenises ``" dog"`` as one word)."""
    return [tokenizer.encode(" " + entity.strip()) for entity in entities]


def assemble_text(
    template: PromptTemplate,
    entity_ids: torch.Tensor,
    entity_lengths: torch.Tensor,
    keep: torch.Tensor,
    caption_ids: torch.Tensor,
    caption_lengths: torch.Tensor,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[hard prompt of the kept entities][caption]`` per row, left-aligned and right-padded, on the device.

    Args:
        entity_ids: ``(B, E, W)`` tokens of each detected entity (padding beyond ``entity_lengths``).
        entity_lengths: ``(B, E)`` tokens per entity, 0 for an empty slot.
        keep: ``(B, E)`` bool, entities to put in the prompt (the rest are masked out).
        caption_ids: ``(B, C)`` caption tokens ending with EOS (padding beyond ``caption_lengths``).
        caption_lengths: ``(B,)``.

    Returns:
        ``text_ids (B, M)``, ``text_mask (B, M)`` (1 = real token) and ``is_caption (B, M)`` (bool), where ``M``
        is fixed by the input shapes (so no host sync is needed to size it).
    """
    device, batch = caption_ids.device, caption_ids.shape[0]
    keep = keep & (entity_lengths > 0)
    num_entities, width = entity_ids.shape[1], entity_ids.shape[2]

    def fixed(ids: tuple[int, ...], valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.tensor(ids, dtype=torch.long, device=device).expand(batch, len(ids))
        mask = torch.ones(batch, len(ids), dtype=torch.bool, device=device)
        return tokens, mask if valid is None else mask & valid[:, None]

    pieces = [fixed(template.head), fixed(template.nothing, ~keep.any(dim=1))]
    kept_before = torch.cumsum(keep.long(), dim=1) - keep.long()  # kept entities to the left of each slot
    positions = torch.arange(width, device=device)
    for k in range(num_entities):
        pieces.append(fixed(template.sep, keep[:, k] & (kept_before[:, k] > 0)))
        pieces.append((entity_ids[:, k], keep[:, k, None] & (positions[None] < entity_lengths[:, k, None])))
    pieces.append(fixed(template.tail))
    prompt_tokens = torch.cat([p[0] for p in pieces], dim=1)
    prompt_valid = torch.cat([p[1] for p in pieces], dim=1)
    caption_valid = torch.arange(caption_ids.shape[1], device=device)[None] < caption_lengths[:, None]
    tokens = torch.cat((prompt_tokens, caption_ids), dim=1)
    valid = torch.cat((prompt_valid, caption_valid), dim=1)
    is_caption = torch.cat((torch.zeros_like(prompt_valid), caption_valid), dim=1)
    # A stable sort of "invalid" moves the valid tokens left and keeps their order.
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
    tokens, valid, is_caption = tokens.gather(1, order), valid.gather(1, order), is_caption.gather(1, order)
    return tokens.masked_fill(~valid, pad_id), valid.long(), is_caption


def next_token_labels(
    text_ids: torch.Tensor, is_caption: torch.Tensor, soft_length: int, index: torch.Tensor | None = None
) -> torch.Tensor:
    """Labels ``(B, L)`` of the full sequence: ``labels[t] = token[t + 1]`` where token ``t + 1`` is a caption token
    (EOS included), else ``IGNORE_INDEX``. Position ``t``'s logits predict token ``t + 1``. ``index``: the sequence
    layout (:func:`layout_index`); ``None`` is soft prompt first, ``L = soft_length + M``."""
    batch = text_ids.shape[0]
    ignore = torch.full((batch, soft_length), IGNORE_INDEX, dtype=torch.long, device=text_ids.device)
    if index is None:
        index = torch.arange(soft_length + text_ids.shape[1], device=text_ids.device).expand(batch, -1)
    full_ids = arrange(index, ignore, text_ids)
    full_caption = arrange(index, torch.zeros_like(ignore, dtype=torch.bool), is_caption)
    shifted = torch.where(full_caption[:, 1:], full_ids[:, 1:], IGNORE_INDEX)
    return torch.cat((shifted, torch.full_like(shifted[:, :1], IGNORE_INDEX)), dim=1)


def full_attention_mask(text_mask: torch.Tensor, soft_length: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, L)``: the soft prompt is always attended to; ``index`` as in :func:`next_token_labels`."""
    ones = torch.ones(text_mask.shape[0], soft_length, dtype=text_mask.dtype, device=text_mask.device)
    if index is None:
        return torch.cat((ones, text_mask), dim=1)
    return arrange(index, ones, text_mask)


def layout_index(
    batch: int,
    soft_length: int,
    text_length: int,
    hard_prompt_lengths: torch.Tensor | None,
    *,
    soft_prompt_first: bool,
    only_hard_prompt: bool,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Where each position of the model's input sequence comes from, ``(B, L)``, as ViECap's ``ClipCaptionModel``
    orders it: indices into ``cat(soft prompt (S slots), text (M slots))``, so slot ``s < S`` is soft prompt token
    ``s`` and slot ``S + j`` is text token ``j`` (the text is ``[hard prompt][caption][padding]``).

    * ``hard_prompt_lengths is None`` (no hard prompt, ViECap's ``--using_hard_prompt`` off): ``[soft][text]``;
    * ``only_hard_prompt``: ``[text]`` (no soft prompt, ``L = M``);
    * ``soft_prompt_first``: ``[soft][hard prompt][caption]``;
    * otherwise (ViECap's default): ``[hard prompt][soft][caption]``, the soft prompt after each row's hard prompt
      of ``hard_prompt_lengths[b]`` tokens (a gather, so no host sync per row).
    """
    if hard_prompt_lengths is not None and only_hard_prompt:
        index = soft_length + torch.arange(text_length, device=device)
        return index.expand(batch, text_length)
    positions = torch.arange(soft_length + text_length, device=device).expand(batch, soft_length + text_length)
    if hard_prompt_lengths is None or soft_prompt_first:
        return positions
    hard = hard_prompt_lengths.to(device=positions.device)[:, None]
    in_hard, in_soft = positions < hard, positions < hard + soft_length
    return torch.where(in_hard, soft_length + positions, torch.where(in_soft, positions - hard, positions))


def arrange(index: torch.Tensor, soft: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``cat(soft (B, S, ...), text (B, M, ...))`` reordered by ``index (B, L)`` along dim 1: ``(B, L, ...)``."""
    source = torch.cat((soft, text.to(soft.dtype)), dim=1)
    gather_index = index.reshape(*index.shape, *([1] * (source.dim() - 2))).expand(-1, -1, *source.shape[2:])
    return source.gather(1, gather_index)
