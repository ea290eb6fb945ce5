"""An OpenPCDet-style training run on trainwell: the ``OPTIMIZATION`` block of a PointPillars config, mapped.

OpenPCDet's ``tools/train.py`` reads ``cfgs/kitti_models/pointpillar.yaml`` and runs ``train_model``; here the same
settings become trainwell's typed sections and the loop is ``Trainer.fit()``. The detector's forward returns
OpenPCDet's ``(loss, tb_dict, disp_dict)``; ``Detection3DTask.compute_losses`` maps it onto named loss parts.

python examples/openpcdet_style/train.py                 # the synthetic demo's sizes (minutes)
python examples/openpcdet_style/train.py --tiny          # seconds
python examples/openpcdet_style/train.py --kitti /data/kitti/object   # a KITTI object directory
"""

from __future__ import annotations

import argparse

from trainwell import ExperimentConfig, Trainer, validate_config
from trainwell.config.schema import CheckpointConfig, EvalConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from trainwell.tasks.detection3d import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig
from trainwell.tasks.detection3d.scenes import SceneConfig

# OpenPCDet's cfgs/kitti_models/pointpillar.yaml, OPTIMIZATION section (the values that map one to one).
OPTIMIZATION = {
    "BATCH_SIZE_PER_GPU": 4,
    "NUM_EPOCHS": 80,
    "OPTIMIZER": "adam_onecycle",
    "LR": 0.003,
    "WEIGHT_DECAY": 0.01,
    "MOMS": [0.95, 0.85],
    "PCT_START": 0.4,
    "DIV_FACTOR": 10,
    "GRAD_NORM_CLIP": 10,
}


def experiment(opt: dict, epochs: int, root: str | None, tiny: bool) -> ExperimentConfig:
    """The trainwell experiment of an OpenPCDet ``OPTIMIZATION`` block (``epochs`` replaces ``NUM_EPOCHS``)."""
    assert opt["OPTIMIZER"] == "adam_onecycle", "only adam_onecycle is mapped here"
    scene = SceneConfig(num_channels=16, azimuth_step_deg=0.5) if tiny else SceneConfig()
    return ExperimentConfig(
        task=Detection3DTaskConfig(),
        data=Detection3DDataConfig(root=root, train_size=16 if tiny else 320, val_size=4 if tiny else 100, scene=scene),
        train=TrainConfig(
            epochs=epochs,
            batch_size=opt["BATCH_SIZE_PER_GPU"],
            clip_grad_norm=opt["GRAD_NORM_CLIP"],
            log_every=20,
            progress_bar="off",
            num_threads=1 if tiny else None,
        ),
        # OpenPCDet's adam_onecycle decays weights the decoupled way (true_wd): AdamW.
        optim=OptimConfig(name="adamw", lr=opt["LR"], weight_decay=opt["WEIGHT_DECAY"]),
        schedule=ScheduleConfig(
            decay="onecycle", pct_start=opt["PCT_START"], div_factor=opt["DIV_FACTOR"], onecycle_moms=list(opt["MOMS"])
        ),
        # ckpt_save_interval 1 and max_ckpt_save_num 2; OpenPCDet evaluates saved checkpoints after training,
        # trainwell at the end of the run (and every `every_epochs`).
        checkpoint=CheckpointConfig(every_epochs=1, keep=2),
        eval=EvalConfig(every_epochs=epochs, batch_size=8, best_metric="Car_bev_moderate_R40_50", best_mode="max"),
        run=RunConfig(name="openpcdet_style"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--epochs", type=int, default=None, help="default: 5 (1 with --tiny), not OpenPCDet's 80")
    parser.add_argument("--kitti", default=None, help="a KITTI object directory (training/, ImageSets/)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: runs/openpcdet_style/<timestamp>)")
    args = parser.parse_args()
    cfg = experiment(OPTIMIZATION, args.epochs or (1 if args.tiny else 5), args.kitti, args.tiny)
    cfg.run.dir = args.run_dir
    validate_config(cfg)
    result = Trainer(cfg, Detection3DTask(cfg.task, cfg.data)).fit()
    print(f"Car BEV AP_R40@0.5 (moderate) {result.metrics['Car_bev_moderate_R40_50']:.1f} → {result.run_dir}")


if __name__ == "__main__":
    main()
