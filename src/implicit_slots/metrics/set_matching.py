"""Hungarian matching of predicted and ground-truth sets, and the Hungarian-Huber set loss.

Port of ``hungarian_huber_loss`` from the Slot Attention reference code (google-research
``slot_attention/utils.py``): a Keras-style Huber loss (delta 1, mean over the property dimension)
between every ground-truth element and every predicted element, an optimal one-to-one assignment
per image (``scipy.optimize.linear_sum_assignment``), and the sum of the matched costs averaged over
the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.nn import functional


def pairwise_huber_cost(predictions: Tensor, targets: Tensor, delta: float = 1.0) -> Tensor:
    """Huber loss between every ground-truth and every predicted element, averaged over features.

    ``huber(x) = 0.5 x²`` for ``|x| <= delta``, else ``delta (|x| − 0.5 delta)`` (Keras ``Huber``).

    Args:
        predictions: (B, Kp, D) predicted elements.
        targets: (B, Kt, D) ground-truth elements.
        delta: the Huber threshold.

    Returns:
        (B, Kt, Kp) cost of matching ground-truth element i with predicted element j.
    """
    if predictions.dim() != 3 or targets.dim() != 3 or predictions.shape[::2] != targets.shape[::2]:
        raise ValueError(
            "pairwise_huber_cost expects predictions (B, Kp, D) and targets (B, Kt, D) with equal B and D; "
            f"got {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    expanded_targets, expanded_predictions = torch.broadcast_tensors(
        targets.unsqueeze(2), predictions.unsqueeze(1)
    )  # (B, Kt, Kp, D) each
    cost = functional.huber_loss(expanded_predictions, expanded_targets, reduction="none", delta=delta)
    return cost.mean(dim=-1)


def hungarian_match(cost: Tensor) -> Tensor:
    """Optimal one-to-one assignment per image for a batch of cost matrices.

    Args:
        cost: (B, Kt, Kp) cost of assigning ground-truth element i to predicted element j, Kt <= Kp.

    Returns:
        int64 (B, Kt): for each ground-truth element the index of its predicted element.
    """
    if cost.dim() != 3 or cost.shape[1] > cost.shape[2]:
        raise ValueError(
            f"hungarian_match expects a (B, Kt, Kp) cost with Kt <= Kp; got shape {tuple(cost.shape)}"
        )
    cost_numpy = cost.detach().to(torch.float64).cpu().numpy()
    assignment = np.zeros(cost.shape[:2], dtype=np.int64)
    for image, matrix in enumerate(cost_numpy):
        rows, columns = linear_sum_assignment(matrix)
        assignment[image, rows] = columns
    return torch.from_numpy(assignment).to(cost.device)


def pad_set(targets: Tensor, size: int) -> Tensor:
    """Pad a batch of target sets with all-zero rows ("no object") to ``size`` elements.

    Locatello et al. pad every CLEVR target set with zero rows to the number of slots, so that the
    Hungarian matching assigns *every* slot: a slot that matches no real object is matched to a zero row
    and learns to predict real-object flag 0. Without the padding, Kp - Kt slots per image get no loss
    at all, yet their confidences are still ranked by the average precision.

    Args:
        targets: (B, Kt, D) target elements; padding rows are all zeros (real-object flag 0).
        size: Kp, the number of rows wanted (the number of predicted elements), ``size >= Kt``.

    Returns:
        (B, size, D): ``targets`` followed by ``size - Kt`` zero rows (``targets`` itself when Kt == size).
    """
    if targets.dim() != 3:
        raise ValueError(f"pad_set expects targets (B, Kt, D); got shape {tuple(targets.shape)}")
    missing = size - targets.shape[1]
    if missing < 0:
        raise ValueError(
            f"pad_set: {targets.shape[1]} target elements do not fit in {size} predicted elements"
        )
    if missing == 0:
        return targets
    return functional.pad(targets, (0, 0, 0, missing))  # (B, size, D)


def hungarian_huber_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """Set-prediction loss of Locatello et al.: Huber costs summed over the optimal matching.

    The matching is found without gradient; the loss is differentiable in ``predictions`` through
    the matched costs. The targets are first padded with zero rows to Kp elements (:func:`pad_set`, as
    in the reference, whose data pipeline pads to the number of slots), so every predicted element is
    matched and the slots left over learn "not a real object" (flag 0).

    Args:
        predictions: (B, Kp, D) predicted elements (e.g. D = 19 CLEVR properties).
        targets: (B, Kt, D) ground-truth elements, Kt <= Kp; padding rows are all zeros.

    Returns:
        Scalar: mean over the batch of the sum over all Kp matched pairs of the Huber cost.
    """
    targets = pad_set(targets, predictions.shape[1])  # (B, Kp, D)
    cost = pairwise_huber_cost(predictions, targets)  # (B, Kp, Kp)
    assignment = hungarian_match(cost)  # (B, Kp)
    matched_cost = cost.gather(2, assignment.unsqueeze(2)).squeeze(2)  # (B, Kp)
    return matched_cost.sum(dim=1).mean()
