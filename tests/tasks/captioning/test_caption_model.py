"""The ViECap model: shapes, the soft-prompt-first layout, frozen_gpt, and a local pretrained GPT-2."""

from pathlib import Path

import pytest
import torch
from captioning_helpers import small_model_config

from trainwell.tasks.captioning.model import CaptionModel
from trainwell.tasks.captioning.prompts import full_attention_mask


def make_model(**overrides) -> CaptionModel:
    torch.manual_seed(0)
    return CaptionModel(small_model_config(**overrides), vocab_size=50, eos_id=1).eval()


def test_forward_shapes() -> None:
    model = make_model()
    text = torch.randint(2, 50, (3, 7))
    mask = full_attention_mask(torch.ones(3, 7, dtype=torch.long), model.soft_prompt_length)
    logits = model(torch.randn(3, 512), text, mask)
    assert logits.shape == (3, 4 + 7, 50)
    assert model.soft_prompt(torch.randn(3, 512)).shape == (3, 4, 32)


def test_soft_prompt_comes_first() -> None:
    model = make_model()
    features, text = torch.randn(2, 512), torch.randint(2, 50, (2, 6))
    embeddings = model.input_embeddings(features, text)
    torch.testing.assert_close(embeddings[:, :4], model.soft_prompt(features))
    torch.testing.assert_close(embeddings[:, 4:], model.gpt.transformer.wte(text))
    # causal attention: the soft prompt's logits do not depend on the text, every text position depends on the feature
    other_text = text.clone()
    other_text[:, 0] = (text[:, 0] + 1) % 48 + 2
    a, b = model(features, text), model(features, other_text)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    c = model(features + 1.0, text)
    assert ((c[:, 4:] - a[:, 4:]).abs().amax(dim=-1) > 1e-4).all()


def test_frozen_gpt_trains_only_the_mapping_network() -> None:
    model = make_model(frozen_gpt=True, dropout=0.5)
    assert not any(p.requires_grad for p in model.gpt.parameters())
    assert all(p.requires_grad for p in model.mapping_network.parameters())
    model.train()
    assert model.mapping_network.training and not model.gpt.training  # no dropout in the frozen GPT-2
    logits = model(torch.randn(2, 512), torch.randint(2, 50, (2, 5)))
    logits.sum().backward()
    assert all(p.grad is None for p in model.gpt.parameters())
    assert model.mapping_network.linear.weight.grad is not None


def test_language_model_loads_from_a_local_directory(tmp_path: Path) -> None:
    source = make_model()
    source.gpt.save_pretrained(tmp_path / "gpt")
    loaded = CaptionModel(small_model_config(language_model=str(tmp_path / "gpt")), vocab_size=0, eos_id=1)
    for (name, a), (_, b) in zip(source.gpt.state_dict().items(), loaded.gpt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        CaptionModel(small_model_config(language_model=str(tmp_path / "missing")), vocab_size=0, eos_id=1)
