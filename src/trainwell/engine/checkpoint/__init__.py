"""Checkpoints: durable files (``files``), the run's checkpoint directory (``manager``), what a checkpoint holds
(``state``: named parts that save themselves), RNG streams (``rng``), resuming (``resume``) and model weights alone
(``weights``: ``--init-from``, eval, export)."""

from trainwell.engine.checkpoint.files import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    load_checkpoint,
)
from trainwell.engine.checkpoint.manager import BEST, LAST, CheckpointManager
from trainwell.engine.checkpoint.state import FORMAT_VERSION, RunState, TrainState
from trainwell.engine.checkpoint.weights import WeightsReport, export_weights, load_model_weights

__all__ = [
    "BEST",
    "FORMAT_VERSION",
    "LAST",
    "CheckpointError",
    "CheckpointManager",
    "CorruptCheckpointError",
    "RunState",
    "TrainState",
    "UnsafeCheckpointError",
    "WeightsReport",
    "atomic_save",
    "export_weights",
    "load_checkpoint",
    "load_model_weights",
]
