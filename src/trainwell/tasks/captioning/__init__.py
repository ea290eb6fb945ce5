"""ViECap-style entity-aware prefix captioning: synthetic corpus, GPT-2 with a soft + hard prompt, COCO metrics.

Importing the task loads ``transformers`` lazily (on model build), ``tokenizers`` and ``pycocoevalcap`` when used.
"""

from trainwell.tasks.captioning.task import CaptioningDataConfig, CaptioningTask, CaptioningTaskConfig

__all__ = ["CaptioningDataConfig", "CaptioningTask", "CaptioningTaskConfig"]
