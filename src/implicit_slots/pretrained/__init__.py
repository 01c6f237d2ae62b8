"""Trained models in the box: load one in a line, segment images of any size.

>>> from implicit_slots.pretrained import load_pretrained
>>> model = load_pretrained("slate-clevr-lite")          # or a run folder, checkpoint or weights file
>>> segmentation = model.segment(images)                # images (B, 3, H, W) in [0, 1], any H, W
>>> segmentation.masks, segmentation.slots              # (B, K, H, W), (B, K, D)

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``); a file that is not a weights
file, checkpoint or run folder of implicit-slots is one :class:`ModelFileError`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from implicit_slots.experiment import ExperimentSetupError, build_model, load_model_state
from implicit_slots.pretrained.catalog import ModelCard, available_pretrained, get_card, weights_path
from implicit_slots.pretrained.segmentation import PretrainedModel, Segmentation
from implicit_slots.pretrained.weights import ModelFile, ModelFileError, read_model_file, write_weights

__all__ = [
    "ModelCard",
    "ModelFile",
    "ModelFileError",
    "PretrainedModel",
    "Segmentation",
    "available_pretrained",
    "get_card",
    "load_pretrained",
    "read_model_file",
    "weights_path",
    "write_weights",
]


def load_pretrained(name_or_path: str | Path, device: str | torch.device = "cpu") -> PretrainedModel:
    """A trained model in eval mode, by shipped name or from a run folder / checkpoint / weights file.

    Args:
        name_or_path: a name from :func:`available_pretrained`, or a path.
        device: where to put the model.

    Raises:
        ModelFileError: an unknown name that is not a path either, or a path that is not one of ours, or
            parameters that do not fit the model their config builds.
    """
    text = str(name_or_path)
    if text in available_pretrained():
        path, name = weights_path(text), text
    elif Path(text).exists():
        path, name = Path(text), text
    else:
        raise ModelFileError(
            f"{text!r} is neither a shipped model {available_pretrained()} nor an existing path"
        )
    loaded = read_model_file(path)
    try:
        model = build_model(loaded.config)
    except (KeyError, ExperimentSetupError) as error:
        raise ModelFileError(f"{loaded.source}: cannot build its model: {error}") from error
    try:
        load_model_state(model, loaded.state, loaded.source)
    except ValueError as error:
        raise ModelFileError(str(error)) from error
    return PretrainedModel(model, loaded.config, loaded.step, name).to(device).eval()
