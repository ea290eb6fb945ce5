"""ViECap's checkpoint format, both ways: ``trainwell export --format viecap`` and ``--init-from`` a ViECap file.

ViECap saves ``torch.save(model.state_dict(), "coco_prefix-00N.pt")`` of its ``ClipCaptionModel`` and reads it back
with ``model.load_state_dict(torch.load(f))``. The captioning pack's :class:`~.model.CaptionModel` is built module
for module as that model, so the key map is the identity on every learnt tensor:

============================================================  ==========================================================
trainwell (``CaptionModel``)                                  ViECap (``ClipCaptionModel``)
============================================================  ==========================================================
``gpt.<GPT2LMHeadModel key>``                                 ``gpt.<GPT2LMHeadModel key>`` (``lm_head.weight`` tied)
``mapping_network.linear.{weight,bias}``                      same
``mapping_network.prefix_const``                              same
``mapping_network.transformer.layers.N.norm{1,2}.*``          same
``…layers.N.attn.to_queries.weight`` (no bias)                same (``bias=False`` in ViECap's ``TransformerLayer``)
``…layers.N.attn.to_keys_values.weight`` (no bias)            same
``…layers.N.attn.project.{weight,bias}``                      same
``…layers.N.mlp.fc{1,2}.{weight,bias}``                       same
(none: rebuilt by GPT-2)                                      ``gpt.transformer.h.N.attn.bias``, ``…attn.masked_bias``
============================================================  ==========================================================

The last row is what differs. ViECap pins ``transformers==4.19.2``, whose GPT-2 saves two constant buffers per block
(the causal mask ``attn.bias``, uint8 ``(1, 1, n_positions, n_positions)``, and ``attn.masked_bias`` = -1e4);
releases from 4.31 on no longer save them. The export writes them by default (``gpt2_buffers=False`` for a ViECap
run with a newer ``transformers``); the import checks that they are the causal constants and drops them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from trainwell.engine.checkpoint.files import CheckpointError, atomic_write, atomic_write_text
from trainwell.engine.checkpoint.weights import ForeignWeights, model_state_of, read_for_export

VIECAP_PREFIXES = ("gpt.", "mapping_network.")
"""The two submodules of ViECap's ``ClipCaptionModel`` (and of the pack's ``CaptionModel``)."""
_GPT2_BUFFER = re.compile(r"^gpt\.transformer\.h\.(\d+)\.attn\.(bias|masked_bias)$")
_GPT2_BLOCK = re.compile(r"^gpt\.transformer\.h\.(\d+)\.ln_1\.weight$")
_MASKED_BIAS = -1e4
"""The value transformers 4.19 stores in ``attn.masked_bias``."""


def to_viecap(state: dict[str, torch.Tensor], *, gpt2_buffers: bool = True) -> dict[str, torch.Tensor]:
    """The pack's model state dict → ViECap's ``ClipCaptionModel`` state dict (tensors only, on the CPU).

    Raises:
        CheckpointError: a key outside ``gpt.``/``mapping_network.`` (not a captioning model).
    """
    foreign = [name for name in state if not name.startswith(VIECAP_PREFIXES)]
    if foreign:
        raise CheckpointError(
            f"Not the captioning pack's model: {len(foreign)} tensors have no ViECap counterpart (first: "
            f"{', '.join(foreign[:5])}). --format viecap exports checkpoints of trainwell.tasks.captioning."
        )
    out = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    if gpt2_buffers:
        n_positions = int(out["gpt.transformer.wpe.weight"].shape[0])
        ones = torch.ones(n_positions, n_positions, dtype=torch.uint8)
        causal = torch.tril(ones).view(1, 1, n_positions, n_positions)
        for block in sorted(int(m.group(1)) for name in out if (m := _GPT2_BLOCK.match(name))):
            out[f"gpt.transformer.h.{block}.attn.bias"] = causal.clone()
            out[f"gpt.transformer.h.{block}.attn.masked_bias"] = torch.tensor(_MASKED_BIAS)
    return out


def from_viecap(state: dict[str, torch.Tensor], source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """ViECap's ``ClipCaptionModel`` state dict → the pack's: the GPT-2 mask buffers checked and dropped.

    Raises:
        CheckpointError: an ``attn.bias`` buffer that is not the lower-triangular causal mask (a model that is not
            GPT-2 as ViECap builds it: its weights would not mean the same here).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _GPT2_BUFFER.match(name)
        if match is None:
            out[name] = tensor
        elif match.group(2) == "bias" and not _is_causal_mask(tensor):
            raise CheckpointError(
                f"'{source}': {name} (shape {tuple(tensor.shape)}) is not GPT-2's causal mask (lower-triangular ones "
                "of shape (1, 1, n_positions, n_positions)); this is not a ViECap GPT-2 checkpoint."
            )
    return out


def _is_causal_mask(tensor: torch.Tensor) -> bool:
    if tensor.dim() != 4 or tensor.shape[:2] != (1, 1) or tensor.shape[2] != tensor.shape[3]:
        return False
    n = tensor.shape[-1]
    return bool(torch.equal(tensor.reshape(n, n).bool(), torch.ones(n, n, dtype=torch.bool).tril()))


def read_viecap(payload: dict[str, Any], source: str = "the checkpoint") -> ForeignWeights | None:
    """``--init-from``: a ViECap state dict (a plain dict of tensors with ViECap's mapping-network keys) as the pack's
    state dict; ``None`` for anything else (a trainwell checkpoint is read by the engine itself)."""
    tensors_only = bool(payload) and all(isinstance(v, torch.Tensor) for v in payload.values())
    if not tensors_only or "mapping_network.linear.weight" not in payload:
        return None
    dropped = sum(1 for name in payload if _GPT2_BUFFER.match(name))
    note = f", {dropped} GPT-2 mask buffers of transformers < 4.31 dropped" if dropped else ""
    state = from_viecap(payload, source)
    return ForeignWeights(state=state, container=f"a ViECap ClipCaptionModel state dict ({len(state)} tensors{note})")


def viecap_constructor_args(config: dict[str, Any]) -> dict[str, Any]:
    """ViECap's ``ClipCaptionModel(...)`` arguments for a run's config (``config["task"]``), as far as it says."""
    task = config.get("task", {}) if isinstance(config, dict) else {}
    model = task.get("model", {}) if isinstance(task, dict) else {}
    if not isinstance(model, dict) or not model:
        return {}
    return {
        "continuous_length": model.get("continuous_prompt_length"),
        "clip_project_length": model.get("clip_project_length"),
        "clip_hidden_size": model.get("clip_hidden_size"),
        "num_layers": model.get("num_layers"),
        "num_heads": model.get("num_heads"),
        "gpt_type": model.get("language_model") or "(a random GPT-2: save it with save_pretrained and pass that dir)",
        "soft_prompt_first": model.get("soft_prompt_first"),
        "only_hard_prompt": model.get("only_hard_prompt"),
    }


def export_viecap(checkpoint: str | Path, out: str | Path, *, gpt2_buffers: bool = True) -> tuple[list[Path], str]:
    """Write ``out`` (``torch.save`` of ViECap's state dict, as ViECap's ``main.py`` saves) and ``out.json`` (the
    ``ClipCaptionModel`` arguments that load it); returns the paths and a one-line note for the user.

    Raises:
        CheckpointError: unreadable checkpoint, not a captioning model, or ``out`` not a ``.pt`` file.
    """
    source, target = Path(checkpoint), Path(out)
    if target.suffix != ".pt":
        raise CheckpointError(f"--out '{target}': ViECap reads torch.save files; use a .pt name (coco_prefix-000.pt).")
    payload = read_for_export(source)  # a file, or a sharded directory (its model consolidated)
    state = to_viecap(model_state_of(payload, source), gpt2_buffers=gpt2_buffers)
    atomic_write(target, lambda handle: torch.save(state, handle))
    args = viecap_constructor_args(payload.get("config", {}))
    sidecar = target.with_name(target.name + ".json")
    meta = {"exported_from": str(source), "format": "viecap", "gpt2_buffers": gpt2_buffers, "viecap_args": args}
    atomic_write_text(sidecar, json.dumps(meta, indent=2, default=str) + "\n")
    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
    note = f"ViECap: model = ClipCaptionModel({call}); model.load_state_dict(torch.load('{target}'), strict=True)" + (
        "" if gpt2_buffers else " (transformers >= 4.31: no GPT-2 mask buffers written)"
    )
    return [target, sidecar], note
