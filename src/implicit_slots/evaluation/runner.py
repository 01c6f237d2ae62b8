"""Evaluate a finished (or checkpointed) run: load it, call the model's evaluator, write metrics.json.

``evaluate_run(RUN_DIR)`` reads ``RUN_DIR/config.yaml`` and ``RUN_DIR/checkpoints/last.pt``, rebuilds the
model and the requested split of the dataset, calls ``get_evaluator(model_name)`` and writes
``RUN_DIR/eval/metrics.json``::

    {"run_dir": ..., "model": "slate", "split": "test", "checkpoint_step": 250000,
     "metrics": {"mse": ..., "num_images": ...}, "figures": ["eval/....png"], "options": {...}}

``evaluate_pretrained(NAME, OUT_DIR)`` does the same for a shipped model (:mod:`implicit_slots.pretrained`)
and writes ``OUT_DIR/metrics.json`` (``"run_dir": null, "pretrained": NAME``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from implicit_slots.config import ConfigError, ExperimentConfig, load_config
from implicit_slots.evaluation import EvaluationOptions, get_evaluator
from implicit_slots.experiment import datasets as experiment_datasets
from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    load_model_state,
    seed_everything,
)
from implicit_slots.experiment.datasets import DatasetFactory
from implicit_slots.experiment.device import resolve_device
from implicit_slots.experiment.models import ExperimentSetupError, build_model
from implicit_slots.pretrained import ModelFileError, load_pretrained

__all__ = ["EvaluationRunError", "RunEvaluation", "evaluate_pretrained", "evaluate_run", "load_trained_model"]


class EvaluationRunError(ValueError):
    """The run folder cannot be evaluated (missing files, unknown model/evaluator, bad split)."""


@dataclass
class RunEvaluation:
    """What :func:`evaluate_run` wrote.

    Attributes:
        path: the metrics.json file.
        split: the evaluated split.
        checkpoint_step: training step of the evaluated checkpoint.
        metrics: metric name -> value (includes ``num_images``).
        figures: figure files written by the evaluator.
    """

    path: Path
    split: str
    checkpoint_step: int
    metrics: dict[str, float]
    figures: list[Path]


def load_trained_model(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[Any, ExperimentConfig, int]:
    """(model in eval mode on ``device``, config, checkpoint step) of a run folder.

    Raises:
        EvaluationRunError: no config.yaml / checkpoint, or an invalid config.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise EvaluationRunError(f"{str(run_dir)!r} is not a run folder: no config.yaml")
    try:
        config = load_config(config_path)
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise EvaluationRunError(str(error)) from error
    try:
        model = build_model(config)
        load_model_state(model, checkpoint["model"], run_dir / CHECKPOINT_NAME)
    except (ExperimentSetupError, ValueError) as error:
        raise EvaluationRunError(str(error)) from error
    model.to(device).eval()
    return model, config, int(checkpoint["step"])


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    fid_weights: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    seed: int | None = None,
    dataset_factory: DatasetFactory | None = None,
) -> RunEvaluation:
    """Evaluate the last checkpoint of ``run_dir`` on ``split`` and write ``RUN_DIR/eval/metrics.json``.

    Args:
        run_dir: a run folder written by ``implicit-slots train``.
        split: dataset split to evaluate.
        fid_weights: the standard FID Inception weights file (None: the evaluator's proxy distance only).
        max_images: evaluate at most this many images (None: the whole split).
        batch_size: evaluation batch size (None: the run's ``training.batch_size``).
        device: ``auto`` / ``cpu`` / ``cuda``.
        seed: seed of evaluation randomness (None: the run's ``training.seed``).
        dataset_factory: ``(DataConfig, split) -> Dataset`` (default: ``build_dataset``).

    Raises:
        EvaluationRunError: the run cannot be evaluated; the message says why.
    """
    run_dir = Path(run_dir)
    torch_device = resolve_device(device)
    model, config, step = load_trained_model(run_dir, torch_device)
    return _evaluate(
        model,
        config,
        step,
        run_dir / "eval",
        {"run_dir": str(run_dir)},
        split,
        fid_weights=fid_weights,
        max_images=max_images,
        batch_size=batch_size,
        device=torch_device,
        seed=seed,
        dataset_factory=dataset_factory,
    )


def evaluate_pretrained(
    name_or_path: str | Path,
    out_dir: str | Path,
    split: str = "test",
    *,
    fid_weights: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    seed: int | None = None,
    dataset_factory: DatasetFactory | None = None,
) -> RunEvaluation:
    """Evaluate a shipped model (or a weights file) and write ``OUT_DIR/metrics.json``.

    The same evaluation as :func:`evaluate_run`, on the dataset of the model's config; a shipped model's
    card lists the numbers this gives with ``--max-images`` as in its ``evaluation_command``.

    Args:
        name_or_path: a shipped name (``implicit-slots pretrained list``), weights file, checkpoint or run.
        out_dir: folder for metrics.json and the figures.
        split, fid_weights, max_images, batch_size, device, seed, dataset_factory: as :func:`evaluate_run`.

    Raises:
        EvaluationRunError: the model cannot be loaded or evaluated; the message says why.
    """
    torch_device = resolve_device(device)
    try:
        pretrained = load_pretrained(name_or_path, device=torch_device)
    except ModelFileError as error:
        raise EvaluationRunError(str(error)) from error
    return _evaluate(
        pretrained.model,
        pretrained.config,
        pretrained.step,
        Path(out_dir),
        {"run_dir": None, "pretrained": str(name_or_path)},
        split,
        fid_weights=fid_weights,
        max_images=max_images,
        batch_size=batch_size,
        device=torch_device,
        seed=seed,
        dataset_factory=dataset_factory,
    )


def _evaluate(
    model: Any,
    config: ExperimentConfig,
    step: int,
    out_dir: Path,
    source: dict[str, Any],
    split: str,
    *,
    fid_weights: str | Path | None,
    max_images: int | None,
    batch_size: int | None,
    device: torch.device,
    seed: int | None,
    dataset_factory: DatasetFactory | None,
) -> RunEvaluation:
    """Run the model's evaluator on ``split`` of its config's dataset and write ``out_dir/metrics.json``."""
    try:
        evaluator = get_evaluator(config.model.name)
    except KeyError as error:
        raise EvaluationRunError(str(error.args[0])) from error
    factory = dataset_factory if dataset_factory is not None else experiment_datasets.build_dataset_split
    try:
        dataset = factory(config.data, split)
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise EvaluationRunError(f"data (name {config.data.name!r}, split {split!r}): {message}") from error
    if fid_weights is not None and not Path(fid_weights).is_file():
        raise EvaluationRunError(f"--fid-weights {str(fid_weights)!r} is not a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    options = EvaluationOptions(
        out_dir=out_dir,
        split=split,
        batch_size=batch_size or config.training.batch_size,
        max_images=max_images,
        fid_weights=Path(fid_weights) if fid_weights is not None else None,
        device=device,
        seed=config.training.seed if seed is None else seed,
    )
    seed_everything(options.seed)
    report = evaluator(model, dataset, options)
    base = out_dir.parent if source.get("run_dir") is not None else out_dir
    record = {
        **source,
        "model": config.model.name,
        "split": split,
        "checkpoint_step": step,
        "metrics": {name: _json_number(value) for name, value in report.metrics.items()},
        "figures": [
            str(Path(f).relative_to(base)) if Path(f).is_relative_to(base) else str(f) for f in report.figures
        ],
        "options": {
            "batch_size": options.batch_size,
            "max_images": max_images,
            "fid_weights": str(fid_weights) if fid_weights is not None else None,
            "seed": options.seed,
            "device": str(device),
        },
    }
    path = out_dir / "metrics.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return RunEvaluation(path, split, step, dict(report.metrics), list(report.figures))
