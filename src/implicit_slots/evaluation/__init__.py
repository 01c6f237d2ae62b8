"""Evaluation of trained runs: one evaluator per model, looked up by the model's registry name.

An evaluator is ``evaluate(model, dataset, options) -> EvaluationReport``: it computes the model's
metrics on ``dataset`` (already the requested split) and writes its figures into ``options.out_dir``.
The runner (``implicit-slots evaluate RUN_DIR``) loads the run, calls the evaluator and writes
``RUN_DIR/eval/metrics.json``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from implicit_slots.models.base import ObjectCentricModel


@dataclass
class EvaluationOptions:
    """What every evaluator receives besides the model and the data.

    Attributes:
        out_dir: folder for figures (created by the runner).
        split: name of the split being evaluated (for labels only).
        batch_size: evaluation batch size.
        max_images: evaluate at most this many images (None: the whole split).
        fid_weights: path to the standard FID Inception weights file, or None (proxy distance only).
        device: torch device to run on.
        seed: seed for anything random during evaluation (slot initialisation, sampling).
    """

    out_dir: Path
    split: str = "test"
    batch_size: int = 32
    max_images: int | None = None
    fid_weights: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0


@dataclass
class EvaluationReport:
    """Metrics (name -> number; includes ``num_images``) and the paths of the figures written."""

    metrics: dict[str, float]
    figures: list[Path] = field(default_factory=list)


Evaluator = Callable[[ObjectCentricModel, Dataset, EvaluationOptions], EvaluationReport]

_EVALUATORS: dict[str, Evaluator] = {}
_EVALUATOR_MODULES = (
    "implicit_slots.evaluation.slate",
    "implicit_slots.evaluation.dvae",
    "implicit_slots.evaluation.autoencoder",
    "implicit_slots.evaluation.set_prediction",
)


def register_evaluator(model_name: str, evaluator: Evaluator) -> None:
    """Register the evaluator of the model registered under ``model_name``."""
    _EVALUATORS[model_name] = evaluator


def get_evaluator(model_name: str) -> Evaluator:
    """Look up an evaluator; an unknown model name raises ``KeyError`` listing the valid ones."""
    for module in _EVALUATOR_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    if model_name not in _EVALUATORS:
        raise KeyError(f"no evaluator for model {model_name!r}; valid: {sorted(_EVALUATORS)}")
    return _EVALUATORS[model_name]
