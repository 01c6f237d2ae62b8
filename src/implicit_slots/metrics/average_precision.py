"""Average precision (AP) of set predictions of CLEVR objects, as in Locatello et al. (2020).

A faithful port of ``average_precision_clevr`` / ``compute_average_precision`` from the Slot
Attention reference code (google-research ``slot_attention/utils.py``). Each object is a 19-dim
property vector in Locatello's layout::

    [0:3]   3-D coordinates rescaled from [-3, 3] to [0, 1]  ((x + 3) / 6)
    [3:5]   size one-hot      (2)
    [5:7]   material one-hot  (2)
    [7:10]  shape one-hot     (3)
    [10:18] colour one-hot    (8)
    [18]    real-object flag (targets: 1 = real object, 0 = padding; predictions: confidence)
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

PROPERTY_DIM = 19
"""Length of a Locatello CLEVR property vector."""

AP_THRESHOLDS: tuple[float, ...] = (math.inf, 1.0, 0.5, 0.25, 0.125)
"""The distance thresholds (CLEVR units) at which Locatello et al. report AP; ``inf`` = any distance."""

_ATTRIBUTE_SLICES = (slice(3, 5), slice(5, 7), slice(7, 10), slice(10, 18))


def _as_numpy(array: Tensor | np.ndarray, name: str) -> np.ndarray:
    values = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
    if values.ndim != 3 or values.shape[-1] != PROPERTY_DIM:
        raise ValueError(
            f"average_precision: {name} must have shape (B, K, {PROPERTY_DIM}); got {values.shape}"
        )
    return values.astype(np.float64)


def _discrete_attributes(objects: np.ndarray) -> np.ndarray:
    """Argmax of size, material, shape and colour: (..., 19) -> (..., 4) integer codes."""
    return np.stack([objects[..., part].argmax(axis=-1) for part in _ATTRIBUTE_SLICES], axis=-1)


def compute_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated area under a precision-recall curve.

    The curve is padded with (recall 0, precision 0) and (recall 1, precision 0), the precision is
    made monotonically non-increasing from the right, and the area is summed over the points where
    the recall changes.

    Args:
        precision: (M,) precision after each ranked detection.
        recall: (M,) recall after each ranked detection (non-decreasing).

    Returns:
        The average precision in [0, 1].
    """
    recall_points = [0.0, *recall.tolist(), 1.0]
    precision_points = [0.0, *precision.tolist(), 0.0]
    for i in range(len(precision_points) - 1, 0, -1):
        precision_points[i - 1] = max(precision_points[i - 1], precision_points[i])
    area = 0.0
    for i in range(len(recall_points) - 1):
        if recall_points[i + 1] != recall_points[i]:
            area += precision_points[i + 1] * (recall_points[i + 1] - recall_points[i])
    return float(area)


def average_precision(
    predictions: Tensor | np.ndarray, targets: Tensor | np.ndarray, distance_threshold: float
) -> float:
    """Average precision of predicted object sets against ground-truth sets (Locatello et al. 2020).

    Every one of the B·Kp predictions is a detection, ranked over the whole batch by its confidence
    ``predictions[..., 18]`` (highest first; ties: the later flat index first, as a reversed stable
    sort). For each detection, in that order: its discrete attributes are the argmax of the four
    one-hot groups; among the *real* ground-truth objects of the same image whose size, material,
    shape and colour all equal the prediction's, take the one nearest in 3-D position, measured as
    ``‖(c_true − c_pred) · 6‖₂`` (back in CLEVR's [-3, 3] units). The detection is a true positive
    if that distance is below ``distance_threshold`` and that object was not matched before;
    otherwise (no object with equal attributes, too far, or the nearest object already taken: there
    is no fall-back to the second nearest) it is a false positive. Recall = cumulative TP / number of
    real objects, precision = cumulative TP / detections so far; AP is the interpolated area
    (:func:`compute_average_precision`). Precision and recall are rounded to float32 before the area,
    as in the reference.

    Args:
        predictions: (B, Kp, 19) predicted property vectors; coordinates in [0, 1] as in the targets,
            one-hot groups as scores (only their argmax matters), last entry the confidence that the
            slot is a real object.
        targets: (B, Kt, 19) ground-truth property vectors, padded with rows whose last entry is 0.
        distance_threshold: maximum distance in CLEVR units; ``float('inf')`` (or ``-1``, the
            reference code's spelling) accepts any position. Locatello et al. report
            :data:`AP_THRESHOLDS` = inf, 1, 0.5, 0.25, 0.125.

    Returns:
        The average precision in [0, 1].

    Raises:
        ValueError: on wrong shapes, batch sizes that differ, a negative threshold other than -1, or
            targets without any real object (recall undefined).
    """
    pred = _as_numpy(predictions, "predictions")
    true = _as_numpy(targets, "targets")
    if pred.shape[0] != true.shape[0]:
        raise ValueError(
            f"average_precision: predictions and targets have different batch sizes "
            f"({pred.shape[0]} and {true.shape[0]})"
        )
    if distance_threshold == -1:
        distance_threshold = math.inf
    if not distance_threshold >= 0:
        raise ValueError(
            f"average_precision: distance_threshold must be >= 0, inf or -1; got {distance_threshold}"
        )
    num_real = float(true[:, :, -1].sum())
    if num_real <= 0:
        raise ValueError("average_precision: targets contain no real object (all real-object flags are 0)")

    batch_size, num_predicted, _ = pred.shape
    flat_pred = pred.reshape(batch_size * num_predicted, PROPERTY_DIM)
    order = np.argsort(flat_pred[:, -1], kind="stable")[::-1]  # highest confidence first
    pred_attributes = _discrete_attributes(flat_pred)  # (B*Kp, 4)
    true_attributes = _discrete_attributes(true)  # (B, Kt, 4)
    true_is_real = true[:, :, -1] != 0  # (B, Kt)

    true_positives = np.zeros(len(order))
    false_positives = np.zeros(len(order))
    matched: set[tuple[int, int]] = set()
    for rank, flat_index in enumerate(order):
        image = int(flat_index) // num_predicted
        candidates = true_is_real[image] & (true_attributes[image] == pred_attributes[flat_index]).all(
            axis=-1
        )
        if not candidates.any():
            false_positives[rank] = 1
            continue
        distances = np.linalg.norm((true[image, :, :3] - flat_pred[flat_index, :3]) * 6.0, axis=-1)  # (Kt,)
        distances = np.where(candidates, distances, np.inf)
        best = int(distances.argmin())  # first of equal distances, as the reference's strict `<`
        if distances[best] < distance_threshold and (image, best) not in matched:
            true_positives[rank] = 1
            matched.add((image, best))
        else:
            false_positives[rank] = 1

    cumulative_tp = np.cumsum(true_positives)
    cumulative_fp = np.cumsum(false_positives)
    recall = (cumulative_tp / num_real).astype(np.float32)
    precision = (cumulative_tp / (cumulative_tp + cumulative_fp)).astype(np.float32)
    return compute_average_precision(precision, recall)
