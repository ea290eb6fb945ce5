"""ViECap's captioning model, module for module its ``ClipCaptionModel``: a Transformer mapping network turns a CLIP
feature into a soft prompt that GPT-2 reads with the entity-aware hard prompt and the caption.

``[soft prompt: continuous_prompt_length embeddings] [hard prompt: "There are dog, bench in image."] [caption] [EOS]``
(``soft_prompt_first``; ViECap's other layouts, hard prompt first or no soft prompt, are config keys too).

The mapping network (ViECap's ``MappingNetwork``): a linear map of the ``(B, clip_hidden_size)`` feature to
``clip_project_length`` tokens of the language model's width, concatenated with ``continuous_prompt_length`` learnt
constant tokens, through ViECap's pre-norm Transformer (bias-free query and key/value projections, ReLU MLP of twice
the width, no dropout); the outputs at the constant tokens are the soft prompt. The language model is a
``transformers.GPT2LMHeadModel``: randomly initialised from a small ``GPT2Config`` (nothing downloaded), or loaded
with ``from_pretrained`` from a local directory (``language_model: PATH``). Module names are ViECap's, so the state
dict is the one ViECap saves (``gpt.…``, ``mapping_network.…``; :mod:`.viecap_format` handles what differs).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainwell.tasks.captioning.prompts import arrange, layout_index


@dataclass
class CaptionModelConfig:
    """``task.model``: the mapping network and the language model (ViECap's ``main.py`` option names)."""

    clip_hidden_size: int = 512
    """Size of the input feature (CLIP ViT-B/32: 512, RN50x4: 640)."""
    clip_project_length: int = 10
    """Tokens the feature is projected to before the mapping Transformer."""
    continuous_prompt_length: int = 10
    """Length of the soft prompt (learnt constant tokens whose outputs feed GPT-2)."""
    num_layers: int = 8
    """Layers of the mapping Transformer."""
    num_heads: int = 8
    """Attention heads of the mapping Transformer."""
    prefix_init_std: float = 1.0
    """Standard deviation of the learnt constant tokens at initialisation (ViECap: ``torch.randn``, 1.0). Beside a
    small random GPT-2 (token embeddings of std 0.02) a large constant drowns the feature-dependent part of the soft
    prompt for the first thousand steps; 0.02 lets the feature through from the start."""
    language_model: str | None = None
    """A local directory to load GPT-2 from (``from_pretrained``, no hub access) and its tokenizer; ``None``: a
    random GPT-2 of the size below, with a byte-level BPE trained on the corpus."""
    gpt_layers: int = 2
    """Random GPT-2: transformer blocks (``n_layer``)."""
    gpt_width: int = 128
    """Random GPT-2: hidden size (``n_embd``), also the mapping network's width."""
    gpt_heads: int = 4
    """Random GPT-2: attention heads (``n_head``)."""
    gpt_positions: int = 128
    """Random GPT-2: longest sequence, soft prompt + hard prompt + caption (``n_positions``)."""
    dropout: float = 0.1
    """Random GPT-2: residual, embedding and attention dropout."""
    frozen_gpt: bool = False
    """Train only the mapping network (ViECap's ``ClipCaptionPrefix``): GPT-2's parameters get no gradient and it
    stays in eval mode (no dropout) while the model trains."""
    soft_prompt_first: bool = True
    """With a hard prompt: ``[soft][hard prompt][caption]`` (ViECap: ``--soft_prompt_first``, which its training
    scripts pass); ``false``: ``[hard prompt][soft][caption]`` (ViECap's argparse default)."""
    only_hard_prompt: bool = False
    """With a hard prompt: no soft prompt at all, ``[hard prompt][caption]`` (ViECap: ``--only_hard_prompt``; the
    mapping network is then not used). Without a hard prompt (``task.using_hard_prompt: false``) both options are
    ignored and the layout is ``[soft][caption]``, as in ViECap."""


class MappingAttention(nn.Module):
    """ViECap's ``MultiHeadAttention`` (self-attention use): queries and the key/value pair projected without bias
    (ViECap builds its layers with ``bias=False``), a biased output projection, scores scaled by ``head_size**-0.5``.

    ``to_keys_values`` is one ``Linear(width, 2 * width)`` whose output reads as ``(2, num_heads, head_size)``: the
    first ``width`` features are the keys, the next ``width`` the values (the split of ViECap's weights)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_queries = nn.Linear(width, width, bias=False)
        self.to_keys_values = nn.Linear(width, 2 * width, bias=False)
        self.project = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, width) → (B, N, width)``; every token attends to every token (no mask, no dropout)."""
        batch, length, width = x.shape
        heads, head_size = self.num_heads, width // self.num_heads
        queries = self.to_queries(x).view(batch, length, heads, head_size).transpose(1, 2)
        keys, values = self.to_keys_values(x).view(batch, length, 2, heads, head_size).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(queries, keys, values)  # softmax(q kᵀ / sqrt(head_size)) v
        return self.project(out.transpose(1, 2).reshape(batch, length, width))


class MappingMlp(nn.Module):
    """ViECap's ``MlpTransformer``: ``fc2(relu(fc1(x)))`` (its dropout is 0 in the mapping network)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class MappingLayer(nn.Module):
    """ViECap's ``TransformerLayer``: pre-norm residual attention, then a pre-norm residual MLP (LayerNorm eps 1e-5)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MappingAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MappingMlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MappingTransformer(nn.Module):
    """ViECap's ``Transformer``: ``num_layers`` layers in ``layers`` (an ``nn.Sequential``, as its key names need)."""

    def __init__(self, width: int, num_layers: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(MappingLayer(width, num_heads, mlp_ratio) for _ in range(num_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MappingNetwork(nn.Module):
    """CLIP feature ``(B, clip_hidden_size)`` → soft prompt ``(B, continuous_prompt_length, width)``.

    Module for module ViECap's ``MappingNetwork``, so the state dict keys are its keys: ``linear``,
    ``prefix_const``, ``transformer.layers.N.{norm1, attn.{to_queries, to_keys_values, project}, norm2,
    mlp.{fc1, fc2}}``."""

    def __init__(self, cfg: CaptionModelConfig, width: int) -> None:
        super().__init__()
        if width % cfg.num_heads:
            raise ValueError(
                f"task.model.num_heads={cfg.num_heads} must divide the language model's width {width} "
                "(the mapping network works at GPT-2's width)."
            )
        self.clip_project_length = cfg.clip_project_length
        self.linear = nn.Linear(cfg.clip_hidden_size, cfg.clip_project_length * width)
        self.prefix_const = nn.Parameter(torch.randn(cfg.continuous_prompt_length, width) * cfg.prefix_init_std)
        self.transformer = MappingTransformer(width, cfg.num_layers, cfg.num_heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.linear(features).view(features.shape[0], self.clip_project_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(features.shape[0], -1, -1).to(projected.dtype)
        out = self.transformer(torch.cat((projected, prefix), dim=1))
        return out[:, self.clip_project_length :]


def build_language_model(cfg: CaptionModelConfig, vocab_size: int, eos_id: int) -> nn.Module:
    """GPT-2: from ``cfg.language_model`` (a local directory) or random from a small config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if cfg.language_model:
        path = Path(cfg.language_model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"task.model.language_model={cfg.language_model!r} is not a local model directory (no config.json). "
                "Save one with model.save_pretrained(dir); nothing is downloaded from a hub."
            )
        return GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.gpt_positions,
        n_embd=cfg.gpt_width,
        n_layer=cfg.gpt_layers,
        n_head=cfg.gpt_heads,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    # eager attention fills masked scores with the dtype's minimum instead of -inf: a fully padded row (left
    # padding at generation) stays finite, so no NaN reaches the real rows through the padded keys and values.
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config)


class CaptionModel(nn.Module):
    """ViECap: mapping network + GPT-2, soft prompt first.

    Attributes:
        mapping_network: the feature → soft-prompt Transformer.
        gpt: the ``GPT2LMHeadModel``.
    """

    def __init__(self, cfg: CaptionModelConfig, vocab_size: int, eos_id: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.gpt = build_language_model(cfg, vocab_size, eos_id)
        self.width = int(self.gpt.config.n_embd)
        self.mapping_network = MappingNetwork(cfg, self.width)
        if cfg.frozen_gpt:
            self.gpt.requires_grad_(False)
        forward_args = inspect.signature(type(self.gpt).forward).parameters
        self._cache_name = "cache" if "cache" in forward_args else "past_key_values"

    @property
    def soft_prompt_length(self) -> int:
        return self.cfg.continuous_prompt_length

    def train(self, mode: bool = True) -> CaptionModel:
        super().train(mode)
        if self.cfg.frozen_gpt:
            self.gpt.eval()  # as ViECap's ClipCaptionPrefix: a frozen GPT-2 runs without dropout
        return self

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """GPT-2's token embeddings ``(B, T) → (B, T, width)``."""
        return self.gpt.transformer.wte(ids)

    def soft_prompt(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, clip_hidden_size)`` → ``(B, continuous_prompt_length, width)``."""
        return self.mapping_network(features)

    def layout_index(self, text_ids: torch.Tensor, hard_prompt_lengths: torch.Tensor | None) -> torch.Tensor:
        """The sequence layout ``(B, L)`` of soft prompt and ``text_ids`` under this model's prompt options."""
        return layout_index(
            text_ids.shape[0],
            self.cfg.continuous_prompt_length,
            text_ids.shape[1],
            hard_prompt_lengths,
            soft_prompt_first=self.cfg.soft_prompt_first,
            only_hard_prompt=self.cfg.only_hard_prompt,
            device=text_ids.device,
        )

    def input_embeddings(
        self, features: torch.Tensor, text_ids: torch.Tensor, hard_prompt_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """GPT-2's input ``(B, L, width)``: the soft prompt and the token embeddings of ``text_ids`` ``(B, M)``
        (``[hard prompt][caption]``, right-padded) in the order of :meth:`layout_index`, as ViECap's ``forward``."""
        text = self.embed_tokens(text_ids)
        if hard_prompt_lengths is not None and self.cfg.only_hard_prompt:
            return text  # ViECap computes the soft prompt and drops it; it never reaches GPT-2
        soft = self.soft_prompt(features)
        return arrange(self.layout_index(text_ids, hard_prompt_lengths), soft, text)

    def forward(
        self,
        features: torch.Tensor,
        text_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        hard_prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits ``(B, L, vocab)``, as ViECap's ``ClipCaptionModel.forward(continuous_prompt,
        caption_tokens, hard_prompts_length, mask).logits``.

        Args:
            features: ``(B, clip_hidden_size)`` image (or, in text-only training, caption) features.
            text_ids: ``(B, M)`` hard-prompt and caption tokens, right-padded.
            attention_mask: ``(B, L)`` in the sequence's layout, 1 for real positions (soft prompt included).
            hard_prompt_lengths: ``(B,)`` hard-prompt tokens at the start of each row of ``text_ids``; ``None``:
                no hard prompt (the soft prompt goes first whatever the options say).
        """
        embeddings = self.input_embeddings(features, text_ids, hard_prompt_lengths)
        return self.lm(embeddings, attention_mask)

    def lm(self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """GPT-2's logits ``(B, L, vocab)`` for input embeddings ``(B, L, width)`` (positions 0 … L-1)."""
        return self.gpt(inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False).logits

    def lm_cached(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """GPT-2 with its key/value cache: ``(logits (B, L, vocab), cache)``; ``attention_mask`` covers the cached
        positions too. (transformers ≥ 5 names the cache ``cache``, older releases ``past_key_values``.)"""
        out = self.gpt(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_name: cache},
        )
        return out.logits, getattr(out, self._cache_name)
