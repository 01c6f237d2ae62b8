"""The weights file of a trained model: its resolved config and its parameters, nothing else.

A weights file is what ``implicit-slots pretrained export`` writes and what ships in the package: a
``torch.save`` of a plain dict (read back with ``weights_only=True``, so loading never unpickles arbitrary
objects)::

    {"format": "implicit-slots/weights", "format_version": 1,
     "config": {...the run's resolved config...}, "model": {...state dict...}, "step": 4000}

No optimizer state, RNG state or data position: a weights file cannot resume training (a run folder's
``checkpoints/last.pt`` can, and :func:`read_model_file` reads either).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from implicit_slots.config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict, load_config
from implicit_slots.experiment.checkpoint import save_checkpoint_atomic

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "ModelFile",
    "ModelFileError",
    "read_model_file",
    "write_weights",
]

WEIGHTS_FORMAT = "implicit-slots/weights"
WEIGHTS_FORMAT_VERSION = 1
_RUN_CHECKPOINT = Path("checkpoints") / "last.pt"


class ModelFileError(ValueError):
    """A path that is not a model we can load: not a weights file, checkpoint or run folder of ours."""


@dataclass
class ModelFile:
    """A trained model's config and parameters, read from a weights file, checkpoint or run folder.

    Attributes:
        config: the resolved experiment config the model was trained with.
        state: the model's state dict (CPU tensors).
        step: the training step the parameters come from.
        source: the file they were read from.
    """

    config: ExperimentConfig
    state: dict[str, Tensor]
    step: int
    source: Path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler raises many types on foreign or damaged files
        raise ModelFileError(
            f"{path}: not a weights file or checkpoint of implicit-slots (corrupt, truncated or another "
            f"program's file; torch.load raised {type(error).__name__})"
        ) from error


def _config(data: Any, path: Path) -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: holds no config")
    try:
        return config_from_dict(data, source=f"{path} (stored config)")
    except ConfigError as error:
        raise ModelFileError(f"{path}: its stored config is not valid here: {error}") from error


def read_model_file(path: str | Path) -> ModelFile:
    """Read a weights file, a training checkpoint (``last.pt``) or a run folder.

    Raises:
        ModelFileError: the path does not exist or is none of those three; the message names it.
    """
    path = Path(path)
    if path.is_dir():
        config_path, checkpoint_path = path / "config.yaml", path / _RUN_CHECKPOINT
        if not config_path.is_file() or not checkpoint_path.is_file():
            raise ModelFileError(
                f"{path}: not a run folder (needs config.yaml and {_RUN_CHECKPOINT}) and not a weights file"
            )
        try:
            config = load_config(config_path)
        except ConfigError as error:
            raise ModelFileError(str(error)) from error
        contents = _torch_load(checkpoint_path)
        if not isinstance(contents, dict) or not isinstance(contents.get("model"), dict):
            raise ModelFileError(f"{checkpoint_path}: not a checkpoint of implicit-slots")
        return ModelFile(config, contents["model"], int(contents.get("step", 0)), checkpoint_path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file or folder")
    contents = _torch_load(path)
    if not isinstance(contents, dict) or not isinstance(contents.get("model"), dict):
        raise ModelFileError(f"{path}: not a weights file or checkpoint of implicit-slots")
    if contents.get("format") == WEIGHTS_FORMAT:
        version = contents.get("format_version")
        if version != WEIGHTS_FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: weights format version {version!r}, expected {WEIGHTS_FORMAT_VERSION}"
            )
    elif "config" not in contents or "optimizer" not in contents:
        raise ModelFileError(f"{path}: not a weights file or checkpoint of implicit-slots")
    return ModelFile(_config(contents.get("config"), path), contents["model"], int(contents["step"]), path)


def write_weights(config: ExperimentConfig, state: dict[str, Tensor], step: int, path: str | Path) -> Path:
    """Write a weights file atomically, as a checkpoint is written (:func:`save_checkpoint_atomic`).

    Args:
        config: the resolved config the model was trained with.
        state: the model's state dict.
        step: the training step of ``state``.
        path: the file to write.

    Returns:
        ``path``.
    """
    record = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "config": config_to_dict(config),
        "model": {name: tensor.detach().cpu().clone() for name, tensor in state.items()},
        "step": int(step),
    }
    return save_checkpoint_atomic(record, path)
