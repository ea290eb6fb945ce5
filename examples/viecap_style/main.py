"""ViECap's ``main.py`` command line, running on trainwell: the same option names, mapped onto typed config.

python examples/viecap_style/main.py --using_hard_prompt --soft_prompt_first --random_mask --use_amp \\
    --path_of_datasets ./annotations/coco/coco_with_entities.pickle --val_pickle ./annotations/coco/val.pickle
python examples/viecap_style/main.py --synthetic --tiny        # nothing to download: the synthetic corpus, seconds

Options ViECap has and this port does not (on-the-fly CLIP, OPT, only_hard_prompt, vocabulary filtering) are
rejected with a message rather than ignored. The table in README.md maps every option.
"""

from __future__ import annotations

import argparse

from trainwell import ExperimentConfig, Trainer, validate_config
from trainwell.config.schema import CheckpointConfig, EvalConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from trainwell.tasks.captioning import CaptioningDataConfig, CaptioningTask, CaptioningTaskConfig
from trainwell.tasks.captioning.model import CaptionModelConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bs", type=int, default=80)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--random_mask", action="store_true")
    p.add_argument("--prob_of_random_mask", type=float, default=0.4)
    p.add_argument("--clip_project_length", type=int, default=10)
    p.add_argument("--continuous_prompt_length", type=int, default=10)
    p.add_argument("--max_num_of_entities", type=int, default=10)
    p.add_argument("--prompt_template_length", type=int, default=5, help="ignored: measured from the template")
    p.add_argument("--num_layers", type=int, default=8)
    p.add_argument("--noise_variance", type=float, default=0.016)
    p.add_argument("--using_clip_features", action="store_true", default=True, help="always: features are read")
    p.add_argument("--is_rn", action="store_true", help="RN50x4 features (640-d) instead of ViT (512-d)")
    p.add_argument("--language_model", default=None, help="a LOCAL GPT-2 directory (no hub); default: random GPT-2")
    p.add_argument("--using_hard_prompt", action="store_true")
    p.add_argument("--soft_prompt_first", action="store_true", help="always: the layout this port implements")
    p.add_argument("--only_hard_prompt", action="store_true")
    p.add_argument("--save_every", type=int, default=1)
    p.add_argument("--prefix", default="coco_prefix")
    p.add_argument("--path_of_datasets", default=None)
    p.add_argument("--val_pickle", default=None, help="(not in ViECap's main.py) validation features to score")
    p.add_argument("--val_annotations", default=None, help="(not in ViECap's main.py) COCO captions JSON")
    p.add_argument("--out_dir", default=None)
    p.add_argument("--normalize_prefix", type=int, default=1)
    p.add_argument("--frozen_gpt", action="store_true")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--use_amp", action="store_true", help="fp16 autocast with a GradScaler (ViECap's)")
    p.add_argument("--random_seed", type=int, default=30)
    p.add_argument("--warmup_steps", type=int, default=5000, help="(train()'s default in ViECap)")
    p.add_argument("--synthetic", action="store_true", help="train on the synthetic corpus instead of a pickle")
    p.add_argument("--tiny", action="store_true", help="with --synthetic: small sizes, a smoke test")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """ViECap's options → trainwell's typed sections."""
    if args.only_hard_prompt:
        raise SystemExit("--only_hard_prompt is not implemented by the captioning pack (soft prompt first only).")
    if not args.synthetic and not args.path_of_datasets:
        raise SystemExit("Pass --path_of_datasets (a ViECap feature pickle) and --val_pickle, or --synthetic.")
    small = args.synthetic and args.tiny
    model = CaptionModelConfig(
        clip_hidden_size=640 if args.is_rn else 512,
        clip_project_length=args.clip_project_length,
        continuous_prompt_length=args.continuous_prompt_length,
        num_layers=1 if small else args.num_layers,
        num_heads=4 if small else 8,
        language_model=args.language_model,
        gpt_width=64 if small else 128,
        frozen_gpt=args.frozen_gpt,
    )
    task = CaptioningTaskConfig(
        model=model,
        using_hard_prompt=args.using_hard_prompt,
        max_num_of_entities=args.max_num_of_entities,
        random_mask=args.random_mask,
        prob_of_random_mask=args.prob_of_random_mask,
        noise_variance=args.noise_variance,
        normalize_prefix=bool(args.normalize_prefix),
    )
    data = CaptioningDataConfig(num_workers=args.num_workers)
    if args.synthetic:
        data.train_size, data.val_size = (512, 32) if small else (8000, 300)
    else:
        data.train_pickle, data.val_pickle, data.val_annotations = (
            args.path_of_datasets,
            args.val_pickle,
            args.val_annotations,
        )
    return ExperimentConfig(
        task=task,
        data=data,
        train=TrainConfig(
            epochs=1 if small else args.epochs,
            batch_size=32 if small else args.bs,
            seed=args.random_seed,
            amp="fp16" if args.use_amp else "off",
            device=args.device,
            log_every="0.2ep",  # ViECap: the running loss every 1/5 epoch
        ),
        optim=OptimConfig(name="adamw", lr=2e-3 if small else args.lr),
        schedule=ScheduleConfig(warmup_steps=4 if small else args.warmup_steps, decay="linear", min_lr_ratio=0.0),
        eval=EvalConfig(every_epochs=args.save_every, best_metric="cider_d", best_mode="max"),
        # coco_prefix_latest.pt every 1/5 epoch → last.pt; coco_prefix-00N.pt every save_every epochs, all kept
        checkpoint=CheckpointConfig(every_epochs=args.save_every, keep="all", latest_every="0.2ep"),
        run=RunConfig(name=args.prefix, dir=args.out_dir),
    )


def main(argv: list[str] | None = None) -> None:
    cfg = build_config(parse_args(argv))
    validate_config(cfg)
    result = Trainer(cfg, CaptioningTask(cfg.task, cfg.data)).fit()
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    print(f"{metrics} → {result.run_dir}")


if __name__ == "__main__":
    main()
