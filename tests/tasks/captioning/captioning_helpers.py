"""A small captioning task shared by the tests of the pack."""

from trainwell.tasks.captioning.model import CaptionModelConfig
from trainwell.tasks.captioning.task import CaptioningDataConfig, CaptioningTask, CaptioningTaskConfig


def small_model_config(**overrides) -> CaptionModelConfig:
    values = dict(
        clip_project_length=3,
        continuous_prompt_length=4,
        num_layers=1,
        num_heads=2,
        gpt_layers=2,
        gpt_width=32,
        gpt_heads=2,
        gpt_positions=96,
        dropout=0.0,
    )
    values.update(overrides)
    return CaptionModelConfig(**values)


def small_task(**task_overrides) -> CaptioningTask:
    model = task_overrides.pop("model", small_model_config())
    # METEOR/SPICE off unless a test asks: METEOR's JVM costs seconds per evaluation
    defaults = {"max_new_tokens": 20, "meteor": False, "spice": False}
    cfg = CaptioningTaskConfig(model=model, **{**defaults, **task_overrides})
    data = CaptioningDataConfig(train_size=96, val_size=12, references_per_image=3, max_entities=4, seed=1)
    return CaptioningTask(cfg, data)


def first_batch(task: CaptioningTask, split: str = "train", size: int = 6) -> dict:
    train, val = task.build_datasets()
    dataset = train if split == "train" else val
    return task.collate_fn()([dataset[i] for i in range(size)])
