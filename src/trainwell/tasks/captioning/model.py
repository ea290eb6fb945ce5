"""ViECap's captioning model: a Transformer mapping network turns a CLIP feature into a soft prompt, which GPT-2
reads before the entity-aware hard prompt and the caption (the soft-prompt-first layout).

``[soft prompt: continuous_prompt_length embeddings] [hard prompt: "There are dog, bench in image."] [caption] [EOS]``

The mapping network (as ViECap's ``MappingNetwork``): a linear map of the ``(B, clip_hidden_size)`` feature to
``clip_project_length`` tokens of the language model's width, concatenated with ``continuous_prompt_length`` learnt
constant tokens, through a pre-norm Transformer; the outputs at the constant tokens are the soft prompt. The language
model is a ``transformers.GPT2LMHeadModel``: randomly initialised from a small ``GPT2Config`` (nothing downloaded),
or loaded with ``from_pretrained`` from a local directory (``language_model: PATH``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


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


class MappingNetwork(nn.Module):
    """CLIP feature ``(B, clip_hidden_size)`` → soft prompt ``(B, continuous_prompt_length, width)``."""

    def __init__(self, cfg: CaptionModelConfig, width: int) -> None:
        super().__init__()
        self.clip_project_length = cfg.clip_project_length
        self.linear = nn.Linear(cfg.clip_hidden_size, cfg.clip_project_length * width)
        self.prefix_const = nn.Parameter(torch.randn(cfg.continuous_prompt_length, width) * cfg.prefix_init_std)
        layer = nn.TransformerEncoderLayer(
            width, cfg.num_heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)

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

    def input_embeddings(self, features: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """Soft prompt followed by the token embeddings of ``text_ids`` ``(B, T)``: ``(B, L_soft + T, width)``."""
        soft = self.soft_prompt(features)
        return torch.cat((soft, self.embed_tokens(text_ids).to(soft.dtype)), dim=1)

    def forward(
        self, features: torch.Tensor, text_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits ``(B, L_soft + T, vocab)`` for soft prompt + ``text_ids`` (hard prompt, caption).

        Args:
            features: ``(B, clip_hidden_size)`` image (or, in text-only training, caption) features.
            text_ids: ``(B, T)`` hard-prompt and caption tokens, right-padded.
            attention_mask: ``(B, L_soft + T)``, 1 for real positions (soft prompt included), 0 for padding.
        """
        embeddings = self.input_embeddings(features, text_ids)
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
