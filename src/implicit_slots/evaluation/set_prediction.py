"""Evaluator of set prediction: average precision at Locatello's thresholds and an objects table.

Metrics: ``ap_inf``, ``ap_1``, ``ap_0.5``, ``ap_0.25``, ``ap_0.125`` (AP over the whole evaluated
split at each distance threshold, CLEVR units, see :func:`implicit_slots.metrics.average_precision`),
``hungarian_huber`` (the training loss, averaged per batch) and ``num_images``. The table
(``set_prediction_objects.md``) lists, for the first images, every real ground-truth object next to
the prediction the Hungarian matching assigned to it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from implicit_slots.data.schema import COLORS, MATERIALS, PROPERTY_SLICES, SHAPES, SIZES
from implicit_slots.evaluation import EvaluationOptions, EvaluationReport, register_evaluator
from implicit_slots.metrics import (
    AP_THRESHOLDS,
    average_precision,
    hungarian_match,
    pad_set,
    pairwise_huber_cost,
)
from implicit_slots.metrics.set_matching import hungarian_huber_loss
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.models.set_prediction import SetPredictionOutput

TABLE_NAME = "set_prediction_objects.md"
TABLE_IMAGES = 8


def threshold_name(threshold: float) -> str:
    """Metric name of the AP at a threshold: ``ap_inf``, ``ap_1``, ``ap_0.5``, ..."""
    return "ap_inf" if math.isinf(threshold) else f"ap_{threshold:g}"


def describe_object(vector: Tensor) -> str:
    """``"large metal red cube at (x, y)"`` from a 19-dim property vector (CLEVR units for x, y)."""
    names = []
    for key, vocabulary in (("size", SIZES), ("material", MATERIALS), ("color", COLORS), ("shape", SHAPES)):
        names.append(vocabulary[int(vector[PROPERTY_SLICES[key]].argmax())])
    x, y = (vector[0:2] * 6 - 3).tolist()
    return f"{' '.join(names)} at ({x:+.2f}, {y:+.2f})"


def objects_table(predictions: Tensor, targets: Tensor, first_image: int = 0) -> str:
    """Markdown table of true objects and their Hungarian-matched predictions.

    Args:
        predictions: (B, K, 19) predicted property vectors.
        targets: (B, Kt, 19) ground truth (rows with real flag 0 are skipped).
        first_image: index of ``predictions[0]`` in the split (for the image column).

    Returns:
        Markdown text with columns image, true object, predicted object, confidence, distance
        (CLEVR units), and whether all four attributes agree.
    """
    # The training loss's matching: targets padded with "no object" rows, so every slot is assigned.
    targets = pad_set(targets, predictions.shape[1])  # (B, K, 19)
    assignment = hungarian_match(pairwise_huber_cost(predictions, targets))  # (B, K)
    lines = [
        "| image | true object | predicted object | confidence | distance | attributes |",
        "|---:|---|---|---:|---:|:---:|",
    ]
    for image in range(targets.shape[0]):
        for row in range(targets.shape[1]):
            true = targets[image, row]
            if true[-1] == 0:
                continue
            predicted = predictions[image, assignment[image, row]]
            distance = float(((true[:3] - predicted[:3]) * 6).norm())
            same = describe_object(true).split(" at ")[0] == describe_object(predicted).split(" at ")[0]
            lines.append(
                f"| {first_image + image} | {describe_object(true)} | {describe_object(predicted)} | "
                f"{float(predicted[-1]):.2f} | {distance:.2f} | {'yes' if same else 'no'} |"
            )
    return "\n".join(lines) + "\n"


@torch.no_grad()
def evaluate_set_prediction(
    model: ObjectCentricModel, dataset: Dataset, options: EvaluationOptions
) -> EvaluationReport:
    """AP at every threshold over the split, the matched loss, and the objects table.

    Args:
        model: a :class:`~implicit_slots.models.set_prediction.SetPredictionModel`.
        dataset: the split to evaluate (samples with ``"image"`` and ``"properties"``).
        options: batch size, image limit, device, seed, output folder.

    Returns:
        Metrics ``ap_inf`` ... ``ap_0.125``, ``hungarian_huber``, ``num_images``; the table
        ``options.out_dir / set_prediction_objects.md``.
    """
    model.eval().to(options.device)
    if options.max_images is not None:
        dataset = Subset(dataset, range(min(options.max_images, len(dataset))))  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=0)
    all_predictions: list[Tensor] = []
    all_targets: list[Tensor] = []
    loss_total = 0.0
    batches = iter(loader)  # created first: a DataLoader iterator draws a random seed
    with torch.random.fork_rng(devices=[]):
        # Slot initialisation noise is the only randomness: seeded, and the caller's RNG left untouched.
        torch.manual_seed(options.seed)
        for batch in batches:
            if "properties" not in batch:
                raise KeyError("the set-prediction evaluator needs samples with 'properties' (B, K, 19)")
            batch = {key: value.to(options.device) for key, value in batch.items()}
            output = model(batch)
            if not isinstance(output, SetPredictionOutput):
                raise TypeError(
                    f"the set-prediction evaluator needs a SetPredictionOutput, got {type(output).__name__}"
                )
            loss_total += float(hungarian_huber_loss(output.predictions, batch["properties"])) * len(
                batch["image"]
            )
            all_predictions.append(output.predictions.cpu())
            all_targets.append(batch["properties"].cpu())
    if not all_predictions:
        raise ValueError("the set-prediction evaluator got an empty dataset")
    predictions, targets = torch.cat(all_predictions), torch.cat(all_targets)
    metrics = {
        threshold_name(threshold): average_precision(predictions, targets, threshold)
        for threshold in AP_THRESHOLDS
    }
    metrics["hungarian_huber"] = loss_total / len(predictions)
    metrics["num_images"] = float(len(predictions))
    table_path = Path(options.out_dir) / TABLE_NAME
    table_path.parent.mkdir(parents=True, exist_ok=True)
    count = min(TABLE_IMAGES, len(predictions))
    ap_line = ", ".join(f"{name} {value:.3f}" for name, value in metrics.items() if name.startswith("ap_"))
    table_path.write_text(
        f"# Set prediction: predicted vs true objects ({options.split} split)\n\n"
        f"{int(metrics['num_images'])} images; {ap_line}.\n\n"
        f"First {count} images; each real object with the prediction the Hungarian matching assigned "
        "to it.\n\n" + objects_table(predictions[:count], targets[:count])
    )
    return EvaluationReport(metrics=metrics, figures=[table_path])


register_evaluator("set_prediction", evaluate_set_prediction)
