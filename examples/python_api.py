"""The hand-pose training of `make demo` (configs/hand_pose/synthetic_lifting.yaml), driven from Python.

python examples/python_api.py            # the demo's sizes
python examples/python_api.py --tiny     # a few seconds
"""

from __future__ import annotations

import argparse

from trainwell import ExperimentConfig, Trainer, build_run, validate_config
from trainwell.config.schema import EvalConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from trainwell.tasks.hand_pose import HandPoseDataConfig, HandPoseTask, HandPoseTaskConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--run-dir", default=None, help="run directory (default: runs/python_api/<timestamp>)")
    args = parser.parse_args()

    cfg = ExperimentConfig(
        task=HandPoseTaskConfig(),
        data=HandPoseDataConfig(train_size=2_000 if args.tiny else 80_000, val_size=500 if args.tiny else 5_000),
        train=TrainConfig(epochs=2 if args.tiny else 12, batch_size=256, clip_grad_norm=1.0, log_every=50),
        optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=1e-4),
        # --tiny trains 16 steps: a warmup longer than the run is refused (the LR would never reach optim.lr).
        schedule=ScheduleConfig(warmup_steps=4 if args.tiny else 100, decay="cosine", min_lr_ratio=0.01),
        eval=EvalConfig(best_metric="(mpjpe + pa_mpjpe) / 2", best_mode="min"),
        run=RunConfig(name="python_api", dir=args.run_dir),
    )
    validate_config(cfg)  # the range checks `trainwell train` applies to YAML files
    result = Trainer(build_run(cfg, HandPoseTask(cfg.task, cfg.data))).fit()
    print(f"MPJPE {result.metrics['mpjpe']:.2f} mm, PA-MPJPE {result.metrics['pa_mpjpe']:.2f} mm → {result.run_dir}")


if __name__ == "__main__":
    main()
