"""The training engine: one loop for every model, full-state checkpoints, schedules, logging, DDP.

Entry point: :func:`train` (``implicit-slots train`` on the command line). See docs/training.md.
"""

from implicit_slots.training.checkpoint import CheckpointWriteError
from implicit_slots.training.loop import (
    CHECKPOINT_NAME,
    DIVERGED_EXIT_CODE,
    INTERRUPTED_EXIT_CODE,
    TrainingDivergedError,
    TrainingSetupError,
    TrainResult,
    build_model,
    train,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DIVERGED_EXIT_CODE",
    "INTERRUPTED_EXIT_CODE",
    "CheckpointWriteError",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingSetupError",
    "build_model",
    "train",
]
