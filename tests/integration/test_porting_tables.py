"""docs/porting.md maps every option a ViECap or OpenPCDet user brings, onto keys that exist.

The option lists below are copied from the upstream sources (ViECap's ``main.py`` argparse, OpenPCDet's
``tools/cfgs/kitti_models/pointpillar.yaml`` ``OPTIMIZATION`` block and the ``train.py`` / ``test.py`` flags that
issue #25 names), not from the docs. Each must have a table row whose trainwell column is either a config key that
the typed config really has (a renamed or misspelt key, such as ``task.frozen_gpt`` for ``task.model.frozen_gpt``,
fails here) or says "not supported"/"not needed" with a reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainwell.experiment import load_config

ROOT = Path(__file__).resolve().parents[2]
PORTING = ROOT / "docs" / "porting.md"

VIECAP_OPTIONS = [
    "bs",
    "lr",
    "device",
    "epochs",
    "random_mask",
    "prob_of_random_mask",
    "clip_project_length",
    "continuous_prompt_length",
    "max_num_of_entities",
    "prompt_template_length",
    "num_layers",
    "noise_variance",
    "clip_model",
    "using_clip_features",
    "is_rn",
    "language_model",
    "using_hard_prompt",
    "soft_prompt_first",
    "only_hard_prompt",
    "debug",
    "few_shot_ratio",
    "save_every",
    "prefix",
    "path_of_datasets",
    "out_dir",
    "normalize_prefix",
    "name_of_objects_vocabs",
    "path_of_objects_vocabs",
    "frozen_gpt",
    "num_workers",
    "use_amp",
    "disable_random_seed",
    "random_seed",
]
OPENPCDET_OPTIMIZATION = [
    "OPTIMIZER",
    "LR",
    "WEIGHT_DECAY",
    "MOMENTUM",
    "MOMS",
    "PCT_START",
    "DIV_FACTOR",
    "DECAY_STEP_LIST",
    "LR_DECAY",
    "LR_CLIP",
    "LR_WARMUP",
    "WARMUP_EPOCH",
    "GRAD_NORM_CLIP",
]
OPENPCDET_FLAGS = [
    "ckpt_save_interval",
    "max_ckpt_save_num",
    "ckpt_save_time_interval",
    "num_epochs_to_eval",
    "eval_all",
    "start_epoch",
    "fix_random_seed",
    "sync_bn",
]
SECTIONS = {  # docs/porting.md heading -> the config whose typed sections hold the mapped keys
    "### The `OPTIMIZATION` block": ROOT / "examples/openpcdet_style/pointpillar_kitti.yaml",
    "### Training and test flags": ROOT / "examples/openpcdet_style/pointpillar_kitti.yaml",
    "## ViECap: every `main.py` option, and its weights both ways": ROOT / "configs/captioning/tiny.yaml",
}
KEY = re.compile(r"`((?:train|optim|schedule|data|task|checkpoint|eval|distributed|run|log)\.[a-z0-9_.]+)")


def table_rows(heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` (``\\|`` inside a cell is not a separator)."""
    text = PORTING.read_text(encoding="utf-8")
    assert heading in text, f"docs/porting.md has no section {heading!r}"
    rows, started = [], False
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if not set(cells[0]) <= {"-", " "}:
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header row


def rows_for(rows: list[list[str]], pattern: str) -> list[list[str]]:
    return [r for r in rows if re.search(pattern, r[0])]


def resolves(cfg: object, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not hasattr(node, part):
            return False
        node = getattr(node, part)
    return True


@pytest.mark.parametrize(
    ("heading", "names", "pattern"),
    [
        ("### The `OPTIMIZATION` block", OPENPCDET_OPTIMIZATION, r"`{}[:`]"),
        ("### Training and test flags", OPENPCDET_FLAGS, r"`(?:test\.py )?--{}[ `]"),
        ("## ViECap: every `main.py` option, and its weights both ways", VIECAP_OPTIONS, r"`--{}[ `]"),
    ],
    ids=["openpcdet-optimization", "openpcdet-flags", "viecap-main-py"],
)
def test_every_upstream_option_has_a_row_mapping_it_or_saying_why_not(
    heading: str, names: list[str], pattern: str
) -> None:
    rows = table_rows(heading)
    cfg = load_config(SECTIONS[heading])
    for name in names:
        found = rows_for(rows, pattern.format(re.escape(name)))
        assert found, f"docs/porting.md, {heading}: no row for {name}"
        for row in found:
            mapped, notes = row[1], " ".join(row[2:])
            keys = KEY.findall(mapped)
            unsupported = re.search(r"not (supported|needed)", mapped)
            assert keys or unsupported or "trainwell " in mapped, f"{name}: {mapped!r} names no trainwell key"
            if unsupported:  # the reason follows, in the cell or the notes
                assert len(mapped) + len(notes) > len(unsupported.group(0)) + 20, f"{name}: no reason given"
            for key in keys:
                assert resolves(cfg, key.rstrip(".")), f"{name}: {key} is not a key of {SECTIONS[heading].name}"


def test_the_table_names_adam_onecycles_beta2_against_trainwells_default() -> None:
    (row,) = rows_for(table_rows("### The `OPTIMIZATION` block"), r"`OPTIMIZER: adam_onecycle`")
    text = " ".join(row)
    assert "`optim.betas: [0.95, 0.99]`" in text and "0.999" in text
    assert load_config(SECTIONS["### The `OPTIMIZATION` block"]).optim.betas == [0.95, 0.99]  # the example uses it
    from trainwell.config.schema import OptimConfig

    assert list(OptimConfig().betas) == [0.9, 0.999]  # the default the row warns about
