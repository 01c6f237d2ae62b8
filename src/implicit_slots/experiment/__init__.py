"""What training and evaluation share: an experiment's model, datasets, device, run folder and checkpoints.

Sits above :mod:`implicit_slots.config` and below :mod:`implicit_slots.training` and
:mod:`implicit_slots.evaluation`, which both build on it and never import each other.
"""

from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,
    CheckpointWriteError,
    load_checkpoint,
    load_model_state,
    save_checkpoint_atomic,
    seed_everything,
)
from implicit_slots.experiment.datasets import DatasetFactory, build_dataset_split
from implicit_slots.experiment.device import resolve_device
from implicit_slots.experiment.models import ExperimentSetupError, build_model

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "CheckpointWriteError",
    "DatasetFactory",
    "ExperimentSetupError",
    "build_dataset_split",
    "build_model",
    "load_checkpoint",
    "load_model_state",
    "resolve_device",
    "save_checkpoint_atomic",
    "seed_everything",
]
