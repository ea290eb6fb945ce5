"""The constant-caption baseline of a captioning config's validation set.

``python -m trainwell.tasks.captioning.baseline configs/captioning/synthetic_prefix.yaml [KEY=VALUE ...]`` prints
the caption that scores the highest CIDEr-D when predicted for *every* validation image (searched over the
references of the first ``--images`` images), and that score: what a model that ignores its input can reach.
"""

from __future__ import annotations

import argparse
import json

from trainwell.experiment import build_task, load_config
from trainwell.tasks.captioning.scoring import best_constant_caption, caption_metrics
from trainwell.tasks.captioning.task import CaptioningTask


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides, as for trainwell train")
    parser.add_argument("--images", type=int, default=20, help="candidates: the references of this many images")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    task = build_task(cfg)
    if not isinstance(task, CaptioningTask):
        raise SystemExit(f"{args.config}: task.class_path is not a captioning task.")
    records = task.records("val")
    references = {i: list(r.captions) for i, r in enumerate(records)}
    candidates = [c for r in records[: args.images] for c in r.captions]
    caption, _ = best_constant_caption(references, candidates)
    metrics = caption_metrics(dict.fromkeys(references, caption), references)
    result = {"caption": caption, "candidates": len(set(candidates)), "images": len(records), **metrics}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
