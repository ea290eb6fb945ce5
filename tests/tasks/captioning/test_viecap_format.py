"""ViECap both ways: `trainwell export --format viecap` loads into ViECap's ClipCaptionModel with strict=True and gives
the same logits under each prompt option; ViECap's state dict comes back through --init-from.

The reference below is ViECap's ``ClipCap.py`` re-expressed in plain torch from its published structure (module
names, bias-free q/kv projections, einsum attention, ReLU MLP of ratio 2, prompt assembly with a per-row Python
loop), written here without the pack's code or key map. ``GPT2LMHeadModel`` comes from a local config, as the pack
builds it (ViECap's ``from_pretrained('gpt2')`` would download); with ``legacy_buffers`` each block also holds the two
persistent buffers transformers 4.19.2 (ViECap's pinned release) saves in ``GPT2Attention``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captioning_helpers import small_model_config
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from trainwell.cli import main
from trainwell.engine.checkpoint import CheckpointError
from trainwell.engine.checkpoint.files import atomic_save
from trainwell.engine.checkpoint.weights import load_model_weights
from trainwell.tasks.captioning.model import CaptionModel
from trainwell.tasks.captioning.prompts import full_attention_mask, layout_index
from trainwell.tasks.captioning.task import CaptioningTask

VOCAB, EOS, CLIP, SOFT = 50, 1, 512, 4  # the small model config: clip_project_length 3, soft prompt 4

# -- ViECap's ClipCap.py, re-expressed -----------------------------------------------------------------------------


class RefMlp(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.dropout = nn.Linear(size, hidden), nn.Linear(hidden, size), nn.Dropout(0.0)

    def forward(self, x):
        return self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


class RefMultiHeadAttention(nn.Module):
    def __init__(self, size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_size = num_heads, size // num_heads
        self.to_queries = nn.Linear(size, size, bias=False)
        self.to_keys_values = nn.Linear(size, 2 * size, bias=False)
        self.project = nn.Linear(size, size)

    def forward(self, x):
        b, n, d = x.shape
        q = self.to_queries(x).reshape(b, n, self.num_heads, self.head_size)
        kv = self.to_keys_values(x).reshape(b, n, 2, self.num_heads, self.head_size)
        scores = torch.einsum("bnhd,bmhd->bnmh", q, kv[:, :, 0]) * self.head_size**-0.5
        out = torch.einsum("bnmh,bmhd->bnhd", scores.softmax(dim=2), kv[:, :, 1]).reshape(b, n, d)
        return self.project(out)


class RefTransformerLayer(nn.Module):
    def __init__(self, size: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(size), RefMultiHeadAttention(size, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(size), RefMlp(size, int(size * 2.0))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefTransformer(nn.Module):
    def __init__(self, size: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[RefTransformerLayer(size, num_heads) for _ in range(num_layers)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class RefMappingNetwork(nn.Module):
    def __init__(self, project_length: int, clip_size: int, prefix_length: int, d_model: int, layers: int, heads: int):
        super().__init__()
        self.clip_project_length = project_length
        self.linear = nn.Linear(clip_size, project_length * d_model)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, d_model))
        self.transformer = RefTransformer(d_model, layers, heads)

    def forward(self, x):
        x = self.linear(x).view(x.shape[0], self.clip_project_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(x.shape[0], *self.prefix_const.shape)
        return self.transformer(torch.cat((x, prefix), dim=1))[:, self.clip_project_length :]


class RefClipCaptionModel(nn.Module):
    """ClipCaptionModel(continuous_length, clip_project_length, clip_hidden_size, num_layers, num_heads, gpt_type,
    soft_prompt_first, only_hard_prompt), GPT-2 handed in instead of downloaded."""

    def __init__(self, gpt: GPT2LMHeadModel, sizes: tuple[int, ...], *, soft_first: bool, only_hard: bool) -> None:
        super().__init__()
        continuous_length, project_length, clip_size, layers, heads = sizes
        self.soft_prompt_first, self.only_hard_prompt = soft_first, only_hard
        self.continuous_length = continuous_length
        self.gpt, self.gpt_hidden_size = gpt, gpt.config.hidden_size
        d_model = self.gpt_hidden_size
        self.mapping_network = RefMappingNetwork(project_length, clip_size, continuous_length, d_model, layers, heads)

    def forward(self, continuous_prompt, caption_tokens, hard_prompts_length=None, mask=None):
        caption = self.gpt.transformer.wte(caption_tokens)
        soft = self.mapping_network(continuous_prompt).view(-1, self.continuous_length, self.gpt_hidden_size)
        if hard_prompts_length is None:
            embeddings = torch.cat((soft, caption), dim=1)
        elif self.only_hard_prompt:
            embeddings = caption
        elif self.soft_prompt_first:
            embeddings = torch.cat((soft, caption), dim=1)
        else:
            rows = []
            for i, length in enumerate(hard_prompts_length):
                rows.append(torch.cat((caption[i][:length], soft[i], caption[i][length:]), dim=0).unsqueeze(0))
            embeddings = torch.cat(rows, dim=0)
        return self.gpt(inputs_embeds=embeddings, attention_mask=mask)


def reference(model: CaptionModel, *, soft_first: bool, only_hard: bool, legacy_buffers: bool) -> RefClipCaptionModel:
    c = model.gpt.config
    config = GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head
    )
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    config._attn_implementation = "eager"
    gpt = GPT2LMHeadModel(config)
    if legacy_buffers:  # transformers 4.19.2's GPT2Attention: register_buffer("bias", …), ("masked_bias", …)
        n = config.n_positions
        for block in gpt.transformer.h:
            block.attn.register_buffer("bias", torch.tril(torch.ones((n, n), dtype=torch.uint8)).view(1, 1, n, n))
            block.attn.register_buffer("masked_bias", torch.tensor(-1e4))
    m = model.cfg  # ClipCaptionModel's constructor arguments, in its order
    sizes = (m.continuous_prompt_length, m.clip_project_length, m.clip_hidden_size, m.num_layers, m.num_heads)
    return RefClipCaptionModel(gpt, sizes, soft_first=soft_first, only_hard=only_hard).eval()


# -- inputs in ViECap's form (CaptionsDataset.pad_tokens + utils.padding_captions) ---------------------------------

HARD = [[5, 6, 7], [5, 6, 8, 9, 7], [5, 7]]  # "There are …" prompts of different lengths
CAPTIONS = [[10, 11, 12, 13], [14, 15], [16, 17, 18, 19, 20, 21]]


def viecap_inputs(with_hard: bool, only_hard: bool):
    """``(tokens (B, T), hard_prompts_length | None, mask (B, L))`` as ViECap's collate builds them: hard prompt +
    caption + zero padding per row; the mask counts hard prompt, soft prompt (unless only_hard) and caption."""
    width = max(len(h) + len(c) for h, c in zip(HARD, CAPTIONS, strict=True)) + 2
    tokens, masks = [], []
    for hard, caption in zip(HARD, CAPTIONS, strict=True):
        text = (hard if with_hard else []) + caption
        tokens.append(text + [0] * (width - len(text)))
        prompt = len(hard) if with_hard else 0
        prompt += 0 if (with_hard and only_hard) else SOFT
        masks.append([1.0] * (prompt + len(caption)) + [0.0] * (width - len(text)))
    lengths = [len(h) for h in HARD] if with_hard else None
    return torch.tensor(tokens), lengths, torch.tensor(masks)


SETTINGS = {  # (using_hard_prompt, soft_prompt_first, only_hard_prompt)
    "no_hard_prompt": (False, False, False),
    "hard_prompt_first": (True, False, False),
    "soft_prompt_first": (True, True, False),
    "only_hard_prompt": (True, False, True),
}


def pack_model(soft_first: bool, only_hard: bool) -> CaptionModel:
    torch.manual_seed(0)
    cfg = small_model_config(soft_prompt_first=soft_first, only_hard_prompt=only_hard, num_layers=2, num_heads=4)
    model = CaptionModel(cfg, vocab_size=VOCAB, eos_id=EOS).eval()
    with torch.no_grad():  # no parameter left at 0 or 1 (LayerNorms, biases): a swapped tensor must show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def saved_checkpoint(model: CaptionModel, path: Path) -> Path:
    config = {"task": {"model": {**vars(model.cfg)}}}
    atomic_save({"model": model.state_dict(), "config": config}, path)
    return path


@pytest.mark.parametrize("legacy_buffers", [True, False], ids=["transformers-4.19", "no-gpt2-buffers"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_export_loads_strictly_into_viecap_with_the_same_logits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, legacy_buffers: bool
) -> None:
    with_hard, soft_first, only_hard = SETTINGS[setting]
    model = pack_model(soft_first, only_hard)
    out = tmp_path / "coco_prefix-000.pt"
    flags = [] if legacy_buffers else ["--no-gpt2-buffers"]
    checkpoint = str(saved_checkpoint(model, tmp_path / "last.pt"))
    assert main(["export", checkpoint, "--format", "viecap", "--out", str(out), *flags]) == 0
    assert "ClipCaptionModel(continuous_length=4, clip_project_length=3" in capsys.readouterr().out

    ref = reference(model, soft_first=soft_first, only_hard=only_hard, legacy_buffers=legacy_buffers)
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    ref.load_state_dict(state, strict=True)  # ViECap's own call, made strict

    tokens, lengths, mask = viecap_inputs(with_hard, only_hard)
    features = torch.randn(3, CLIP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(features, tokens, lengths, mask).logits
        hard = torch.tensor(lengths) if lengths is not None else None
        got = model(features, tokens, mask, hard)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    # the task builds ViECap's mask from its own text mask: [hard prompt][soft][caption] ones, padding zeros
    text_mask = (tokens != 0).long()
    index = layout_index(3, SOFT, tokens.shape[1], hard, soft_prompt_first=soft_first, only_hard_prompt=only_hard)
    assert torch.equal(full_attention_mask(text_mask, SOFT, index).float(), mask)


def test_viecap_state_dict_comes_back_through_init_from(tmp_path: Path) -> None:
    model = pack_model(soft_first=False, only_hard=False)
    ref = reference(model, soft_first=False, only_hard=False, legacy_buffers=True)
    torch.manual_seed(3)
    with torch.no_grad():  # weights ViECap trained: none of them the pack's
        for parameter in ref.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    viecap_file = tmp_path / "coco_prefix-014.pt"
    torch.save(ref.state_dict(), viecap_file)  # as ViECap's main.py saves

    fresh = pack_model(soft_first=False, only_hard=False)
    task = CaptioningTask.__new__(CaptioningTask)  # only the foreign-weights hook is used
    report = load_model_weights(fresh, viecap_file, strict=True, foreign=task.foreign_weights)
    assert report.is_exact and "ViECap ClipCaptionModel" in report.describe()
    assert "4 GPT-2 mask buffers of transformers < 4.31 dropped" in report.describe()  # 2 blocks x 2
    tokens, lengths, mask = viecap_inputs(True, False)
    features = torch.randn(3, CLIP)
    with torch.no_grad():
        expected = ref(features, tokens, lengths, mask).logits
        got = fresh(features, tokens, mask, torch.tensor(lengths))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_viecap_file_that_does_not_match_names_the_keys(tmp_path: Path) -> None:
    model = pack_model(soft_first=True, only_hard=False)
    state = reference(model, soft_first=True, only_hard=False, legacy_buffers=False).state_dict()
    del state["mapping_network.transformer.layers.1.attn.to_queries.weight"]
    state["mapping_network.linear.weight"] = torch.zeros(7, CLIP)
    state["mapping_network.extra"] = torch.zeros(1)
    path = tmp_path / "coco_prefix-000.pt"
    torch.save(state, path)
    task = CaptioningTask.__new__(CaptioningTask)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, path, strict=True, foreign=task.foreign_weights)
    message = str(err.value)
    assert "a ViECap ClipCaptionModel state dict" in message
    assert "missing in the checkpoint: mapping_network.transformer.layers.1.attn.to_queries.weight" in message
    assert "unexpected (not in the model): mapping_network.extra" in message
    assert "mapping_network.linear.weight (checkpoint (7, 512)" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded

    state = reference(model, soft_first=True, only_hard=False, legacy_buffers=True).state_dict()
    state["gpt.transformer.h.1.attn.bias"] = torch.ones_like(state["gpt.transformer.h.1.attn.bias"])
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"gpt\.transformer\.h\.1\.attn\.bias .* is not GPT-2's causal mask"):
        load_model_weights(model, path, strict=True, foreign=task.foreign_weights)


def test_export_refuses_what_is_not_a_captioning_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "last.pt"
    atomic_save({"model": {"backbone.weight": torch.zeros(2)}}, checkpoint)
    assert main(["export", str(checkpoint), "--format", "viecap", "--out", str(tmp_path / "x.pt")]) != 0
    err = capsys.readouterr().err
    assert "no ViECap counterpart (first: backbone.weight)" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_init_from_a_viecap_file_through_the_trainer(tmp_path: Path) -> None:
    from trainwell import Trainer, build_run, load_config
    from trainwell.engine.resuming import init_from
    from trainwell.experiment import build_task

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(
        root / "configs/captioning/tiny.yaml", [f"run.dir={tmp_path / 'run'}", "task.model.soft_prompt_first=false"]
    )
    task = build_task(cfg)
    ref = reference(task.build_model(), soft_first=False, only_hard=False, legacy_buffers=True)
    torch.manual_seed(4)
    with torch.no_grad():
        for parameter in ref.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    viecap_file = tmp_path / "coco_prefix-014.pt"
    torch.save(ref.state_dict(), viecap_file)
    trainer = Trainer(build_run(cfg, task))
    report = init_from(trainer.run, viecap_file)  # what `trainwell train … --init-from FILE` calls
    assert report.is_exact
    loaded = trainer.run.model.state_dict()
    for name, tensor in ref.state_dict().items():
        if not name.endswith(("attn.bias", "attn.masked_bias")):
            assert torch.equal(loaded[name].cpu(), tensor), name


@pytest.mark.parametrize("setting", ["hard_prompt_first", "only_hard_prompt", "no_hard_prompt"])
def test_the_task_trains_and_decodes_each_viecap_layout(setting: str) -> None:
    """Labels follow the layout (loss = the mean -log p of each caption token, row by row, no padding) and batched,
    left-padded greedy decoding gives each row what it gives alone."""
    from captioning_helpers import first_batch, small_task

    from trainwell.tasks.captioning.decode import greedy_decode

    with_hard, soft_first, only_hard = SETTINGS[setting]
    model_cfg = small_model_config(soft_prompt_first=soft_first, only_hard_prompt=only_hard)
    task = small_task(model=model_cfg, noise_variance=0.0, random_mask=False, using_hard_prompt=with_hard)
    batch = first_batch(task)
    torch.manual_seed(0)
    model = task.build_model().eval()
    unused = only_hard and with_hard  # the soft prompt never reaches GPT-2: frozen, so DDP waits for no gradient
    assert all(p.requires_grad != unused for p in model.mapping_network.parameters())
    loss = float(task.compute_losses(model, batch)["token_ce"].detach())
    offset = 0 if only_hard else SOFT  # soft-prompt tokens before the caption (hard prompt first or not)
    features = torch.nn.functional.normalize(batch["features"].float(), dim=-1)
    text_ids, text_mask, is_caption = task.text(batch, batch["entity_lengths"] > 0)
    total, count = 0.0, 0
    for b in range(text_ids.shape[0]):
        n, prompt = int(text_mask[b].sum()), int((text_mask[b].bool() & ~is_caption[b]).sum())
        hard = torch.tensor([prompt]) if with_hard else None
        with torch.no_grad():
            log_probs = model(features[b : b + 1], text_ids[b : b + 1, :n], None, hard).log_softmax(-1)[0]
        for j in range(prompt, n):
            total -= float(log_probs[offset + j - 1, text_ids[b, j]])
            count += 1
    assert loss == pytest.approx(total / count, rel=1e-4)
    assert task.check_batch(batch) == []  # the doctor's padding and shift checks read the same layout

    prompt_ids, prompt_mask, prompt_caption = task.text(batch, batch["entity_lengths"] > 0, with_caption=False)
    hard = task.hard_prompt_lengths(prompt_mask, prompt_caption)
    eos = task.tokenizer.eos_id
    together = greedy_decode(model, features, prompt_ids, prompt_mask, eos, 6, hard_prompt_lengths=hard)
    for b in range(prompt_ids.shape[0]):
        n = int(prompt_mask[b].sum())
        alone_hard = hard[b : b + 1] if hard is not None else None
        ids, mask = prompt_ids[b : b + 1, :n], prompt_mask[b : b + 1, :n]
        alone = greedy_decode(model, features[b : b + 1], ids, mask, eos, 6, hard_prompt_lengths=alone_hard)
        assert alone[0].tolist() == together[b].tolist()
