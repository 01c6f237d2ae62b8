"""Adjusted Rand index (ARI) between ground-truth segmentations and predicted slot masks.

ARI compares two partitions of the same pixels and is invariant to permutations of the labels.
This module follows the formula of the DeepMind ``multi_object_datasets`` reference (also used by
SAVi and OCLF): with the contingency table ``n_ij`` = number of pixels in ground-truth segment ``i``
and predicted segment ``j``, its row sums ``a_i``, column sums ``b_j`` and ``N`` labelled pixels::

    index    = Σ_ij n_ij (n_ij − 1)
    expected = Σ_i a_i (a_i − 1) · Σ_j b_j (b_j − 1) / (N (N − 1))
    maximum  = (Σ_i a_i (a_i − 1) + Σ_j b_j (b_j − 1)) / 2
    ARI      = (index − expected) / (maximum − expected)

Foreground ARI (FG-ARI, the number reported for object discovery) drops the ground-truth
background channel, so background pixels are unlabelled and do not count at all.
"""

from __future__ import annotations

import torch
from torch import Tensor


def adjusted_rand_index(true_masks: Tensor, pred_masks: Tensor, exclude_background: bool = False) -> Tensor:
    """Per-image adjusted Rand index between ground-truth masks and predicted slot masks.

    The predicted segmentation of a pixel is the argmax of ``pred_masks`` over slots (ties go to the
    lowest slot index), so soft masks (e.g. alpha masks that sum to 1 over slots) are fine. The
    ground-truth masks are used as given: a pixel belongs to segment ``i`` with weight
    ``true_masks[b, i, h, w]`` (one-hot masks in practice); a pixel whose ground-truth channels are
    all zero is unlabelled and ignored. Everything is computed in float64.

    Degenerate case: when ``maximum == expected`` the ARI is 0/0. This happens exactly when both
    partitions put all labelled pixels into one segment, or both put every pixel into its own segment
    (the partitions are then identical), and also when an image has fewer than two labelled pixels
    (e.g. FG-ARI of an image without foreground objects). This function returns 1.0 in all of these
    cases (the SAVi / OCLF convention; DeepMind's reference returns 1.0 only for the single-cluster
    case). Note the consequence: a model that predicts one slot for the whole image scores FG-ARI 1.0
    on an image with exactly one foreground object.

    Args:
        true_masks: ground-truth masks, (B, Kt, H, W), one channel per segment; with
            ``exclude_background=True`` channel 0 must be the background.
        pred_masks: predicted masks or logits, (B, Kp, H, W); only their argmax over Kp is used.
            Kp may differ from Kt.
        exclude_background: drop ground-truth channel 0 (background) so that its pixels are ignored,
            giving FG-ARI.

    Returns:
        float64 tensor (B,): the ARI of each image, in [-1, 1] (1.0 = identical partitions up to
        relabelling, about 0 = chance).

    Raises:
        ValueError: if the inputs are not 4-D or their batch / spatial sizes differ, or if
            ``exclude_background`` leaves no ground-truth channel.
    """
    if true_masks.dim() != 4 or pred_masks.dim() != 4:
        raise ValueError(
            "adjusted_rand_index expects true_masks (B, Kt, H, W) and pred_masks (B, Kp, H, W); got shapes "
            f"{tuple(true_masks.shape)} and {tuple(pred_masks.shape)}"
        )
    if true_masks.shape[0] != pred_masks.shape[0] or true_masks.shape[2:] != pred_masks.shape[2:]:
        raise ValueError(
            "adjusted_rand_index: batch and spatial sizes must match; got true_masks "
            f"{tuple(true_masks.shape)} and pred_masks {tuple(pred_masks.shape)}"
        )
    if exclude_background:
        if true_masks.shape[1] < 2:
            raise ValueError(
                "adjusted_rand_index(exclude_background=True) needs a background channel plus at least one "
                f"object channel; got true_masks with {true_masks.shape[1]} channel(s)"
            )
        true_masks = true_masks[:, 1:]
    num_pred = pred_masks.shape[1]
    true_groups = true_masks.flatten(2).to(torch.float64)  # (B, Kt, N)
    pred_ids = pred_masks.flatten(2).argmax(dim=1)  # (B, N)
    pred_groups = torch.nn.functional.one_hot(pred_ids, num_pred).to(torch.float64)  # (B, N, Kp)

    contingency = torch.bmm(true_groups, pred_groups)  # (B, Kt, Kp)
    true_sizes = contingency.sum(dim=2)  # (B, Kt)
    pred_sizes = contingency.sum(dim=1)  # (B, Kp)
    num_pixels = true_sizes.sum(dim=1)  # (B,) labelled pixels only

    index = (contingency * (contingency - 1)).sum(dim=(1, 2))  # (B,)
    true_pairs = (true_sizes * (true_sizes - 1)).sum(dim=1)  # (B,)
    pred_pairs = (pred_sizes * (pred_sizes - 1)).sum(dim=1)  # (B,)
    all_pairs = num_pixels * (num_pixels - 1)  # (B,)
    # With fewer than two labelled pixels there are no pairs; the expected index is then 0 too.
    expected = torch.where(all_pairs > 0, true_pairs * pred_pairs / all_pairs.clamp_min(1.0), 0.0)
    maximum = (true_pairs + pred_pairs) / 2
    denominator = maximum - expected
    degenerate = denominator == 0
    ari = (index - expected) / torch.where(degenerate, 1.0, denominator)
    return torch.where(degenerate, torch.ones_like(ari), ari)
