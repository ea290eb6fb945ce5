"""A ViECap-style prefix-captioning port in one file: features → mapping network → soft prompt → a small causal LM.

What ViECap's ``main.py`` does by hand and where it lives here (the README's table maps every option):
noise injection on normalised features (``noise_variance``) and random entity masking (``prob_of_random_mask``) in
``compute_losses``, drawn from torch's global RNG (which the engine checkpoints, so a resume is bitwise); the
cross-entropy with ``ignore_index=0`` computed in fp32 outside autocast (``full_precision``); AMP, warmup + linear
decay, ⅕-epoch ``latest`` checkpoints and every-epoch checkpoints are engine settings in ``config.yaml``.
Generated captions are ragged per-sample results (any length), gathered exactly once and scored on rank 0.

Synthetic data so it runs anywhere in seconds: a caption is ``<bos> w_1 … w_k <eos>`` over a small vocabulary,
and the "CLIP feature" is a fixed random projection of the caption's bag of words plus noise (fp16, as ViECap's).
The language model is a 2-layer Transformer decoder written here (the captioning pack uses GPT-2 from
``transformers``; this example keeps to PyTorch alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from trainwell.engine.amp import full_precision
from trainwell.engine.task import DataConfig, MetricSpec, Task, TaskConfig

PAD, BOS, EOS, VOCAB = 0, 1, 2, 24


@dataclass
class ViECapStyleConfig(TaskConfig):
    class_path: str = "viecap_task:ViECapStyleTask"
    clip_project_length: int = 4
    """Soft-prompt tokens produced by the mapping network (ViECap: --clip_project_length)."""
    noise_variance: float = 0.016
    """Gaussian noise variance added to the normalised features in training (ViECap: --noise_variance)."""
    prob_of_random_mask: float = 0.4
    """Probability of hiding each entity of the hard prompt (ViECap: --prob_of_random_mask)."""
    width: int = 64
    max_len: int = 8


@dataclass
class ViECapStyleDataConfig(DataConfig):
    train_size: int = 512
    val_size: int = 64
    feature_dim: int = 32
    seed: int = 0


class CaptionFeatures(Dataset):
    """``{"features": (D,) fp16, "entities": (E,), "tokens": (L,)}``; a pure function of (seed, split, index)."""

    def __init__(self, cfg: ViECapStyleDataConfig, split: str, max_len: int) -> None:
        self.cfg, self.max_len = cfg, max_len
        self.size = cfg.train_size if split == "train" else cfg.val_size
        self.offset = 0 if split == "train" else 10_000_000
        self.projection = torch.randn(VOCAB, cfg.feature_dim, generator=torch.Generator().manual_seed(cfg.seed))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.offset + index)
        length = int(torch.randint(2, self.max_len - 1, (1,), generator=g))
        words = torch.randint(3, VOCAB, (length,), generator=g).sort().values  # a canonical word order
        tokens = torch.full((self.max_len,), PAD, dtype=torch.int64)
        tokens[0], tokens[1 : length + 1], tokens[length + 1] = BOS, words, EOS
        bag = torch.zeros(VOCAB).index_add_(0, words, torch.ones(length))
        features = bag @ self.projection + 0.1 * torch.randn(self.cfg.feature_dim, generator=g)
        entities = torch.zeros(VOCAB).index_fill_(0, words, 1.0)
        return {"features": features.half(), "entities": entities, "tokens": tokens}


class PrefixCaptioner(nn.Module):
    """Mapping network (features → ``clip_project_length`` prefix tokens) + hard prompt + causal decoder."""

    def __init__(self, feature_dim: int, cfg: ViECapStyleConfig) -> None:
        super().__init__()
        self.prefix_len, self.width = cfg.clip_project_length, cfg.width
        self.mapping = nn.Sequential(nn.Linear(feature_dim, cfg.width * self.prefix_len), nn.Tanh())
        self.entity_prompt = nn.Linear(VOCAB, cfg.width)  # the hard prompt: one token from the (masked) entities
        self.embed = nn.Embedding(VOCAB, cfg.width)
        self.position = nn.Parameter(torch.zeros(1, self.prefix_len + 1 + cfg.max_len, cfg.width))
        layer = nn.TransformerEncoderLayer(cfg.width, 4, 2 * cfg.width, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(cfg.width, VOCAB)

    def forward(self, features: torch.Tensor, entities: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, V)`` for every caption position (soft prompt first, then the hard prompt, then tokens)."""
        soft = self.mapping(features).view(features.shape[0], self.prefix_len, self.width)
        hard = self.entity_prompt(entities).unsqueeze(1)
        x = (
            torch.cat([soft, hard, self.embed(tokens)], dim=1)
            + self.position[:, : self.prefix_len + 1 + tokens.shape[1]]
        )
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        out = self.decoder(x, mask=mask, is_causal=True)
        return self.head(out[:, self.prefix_len + 1 :])

    @torch.no_grad()
    def greedy(self, features: torch.Tensor, entities: torch.Tensor, max_len: int) -> torch.Tensor:
        tokens = torch.full((features.shape[0], 1), BOS, dtype=torch.int64, device=features.device)
        for _ in range(max_len - 1):
            next_token = self(features, entities, tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens


class TokenAccuracy:
    """Generated token ids per sample (ragged: cut at <eos>), exactly-match rate and token F1 on rank 0."""

    def __init__(self, references: Dataset) -> None:
        self.references = references
        self.reset()

    def reset(self) -> None:
        self.indices: list[int] = []
        self.captions: list[torch.Tensor] = []

    def update(self, generated: torch.Tensor, indices: torch.Tensor) -> None:
        for row, index in zip(generated.cpu(), indices.tolist(), strict=True):
            words = row[1:]
            end = (words == EOS).nonzero()
            self.captions.append(words[: int(end[0]) if len(end) else len(words)])
            self.indices.append(index)

    def local_results(self) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.tensor(self.indices, dtype=torch.int64), {"caption": self.captions}

    def load_results(self, indices: torch.Tensor, results: dict[str, Any]) -> None:
        self.indices, self.captions = indices.tolist(), results["caption"]

    def compute(self) -> dict[str, float]:
        exact, f1 = 0.0, 0.0
        for index, caption in zip(self.indices, self.captions, strict=True):
            tokens = self.references[index]["tokens"]
            truth = tokens[(tokens > EOS)].tolist()
            got = caption[caption > EOS].tolist()
            exact += float(got == truth)
            common = len(set(got) & set(truth))
            f1 += 0.0 if not common else 2 * common / (len(set(got)) + len(set(truth)))
        n = max(1, len(self.indices))
        return {"exact": exact / n, "token_f1": f1 / n}


class ViECapStyleTask(Task):
    Config = ViECapStyleConfig
    DataConfig = ViECapStyleDataConfig
    cfg: ViECapStyleConfig
    data_cfg: ViECapStyleDataConfig

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        self.val_set = CaptionFeatures(self.data_cfg, "val", self.cfg.max_len)
        return CaptionFeatures(self.data_cfg, "train", self.cfg.max_len), self.val_set

    def build_model(self) -> nn.Module:
        return PrefixCaptioner(self.data_cfg.feature_dim, self.cfg)

    def build_evaluator(self) -> TokenAccuracy:
        return TokenAccuracy(self.val_set)  # the references come from the validation set the task built

    def metric_names(self) -> set[str]:
        return {"exact", "token_f1"}  # what TokenAccuracy.compute returns

    def metric_specs(self) -> dict[str, MetricSpec]:
        return {
            "exact": MetricSpec(higher_is_better=True, plausible=(0, 1)),
            "token_f1": MetricSpec(higher_is_better=True),
        }

    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = F.normalize(batch["features"].float(), dim=-1)
        features = features + torch.randn_like(features) * self.cfg.noise_variance**0.5  # noise injection
        keep = torch.rand_like(batch["entities"]) >= self.cfg.prob_of_random_mask  # random entity masking
        tokens = batch["tokens"]
        logits = model(features, batch["entities"] * keep, tokens[:, :-1])  # predict token t+1 from tokens ≤ t
        with full_precision():  # ViECap computes the cross-entropy in fp32, outside autocast
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD)
        return {"token_ce": loss}

    def eval_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], indices: torch.Tensor, evaluator: Any
    ) -> None:
        features = F.normalize(batch["features"].float(), dim=-1)
        evaluator.update(model.greedy(features, batch["entities"], self.cfg.max_len), indices)
