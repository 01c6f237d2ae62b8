"""Checkpoints live in :mod:`implicit_slots.experiment.checkpoint` (training writes them, evaluation reads
them); these names stay importable from here for code that imports them from the training package."""

from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,
    CheckpointWriteError,
    assert_finite_state,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint_atomic,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "CheckpointWriteError",
    "assert_finite_state",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_state",
    "restore_rng_state",
    "save_checkpoint_atomic",
    "seed_everything",
]
