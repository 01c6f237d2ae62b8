"""The training engine: one loop for every model, full-state checkpoints, schedules, logging, DDP.

Entry point: :func:`train` (``implicit-slots train`` on the command line). See docs/training.md. What
evaluation shares with training (building the model, checkpoints, datasets, device) is in
:mod:`implicit_slots.experiment`.
"""

from implicit_slots.experiment.checkpoint import CheckpointWriteError
from implicit_slots.training.loop import (
    DIVERGED_EXIT_CODE,
    INTERRUPTED_EXIT_CODE,
    TrainingDivergedError,
    TrainingSetupError,
    TrainResult,
    train,
)

__all__ = [
    "DIVERGED_EXIT_CODE",
    "INTERRUPTED_EXIT_CODE",
    "CheckpointWriteError",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingSetupError",
    "train",
]
