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


def hungarian_huber_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """Set-prediction loss of Locatello et al.: Huber costs summed over the optimal matching.

    The matching is found without gradient; the loss is differentiable in ``predictions`` through
    the matched costs. Padding rows of the targets take part like any other element (as in the
    reference), so the model also learns to predict "not a real object" for unused slots.

    Args:
        predictions: (B, Kp, D) predicted elements (e.g. D = 19 CLEVR properties).
        targets: (B, Kt, D) ground-truth elements, Kt <= Kp.

    Returns:
        Scalar: mean over the batch of the sum over ground-truth elements of the matched Huber cost.
    """
    cost = pairwise_huber_cost(predictions, targets)  # (B, Kt, Kp)
    assignment = hungarian_match(cost)  # (B, Kt)
    matched_cost = cost.gather(2, assignment.unsqueeze(2)).squeeze(2)  # (B, Kt)
    return matched_cost.sum(dim=1).mean()
