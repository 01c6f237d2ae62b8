"""Reconstruction error in SLATE's convention."""

from __future__ import annotations

from torch import Tensor


def per_image_squared_error(target: Tensor, prediction: Tensor) -> Tensor:
    """Sum of squared errors over channels and pixels of each image (SLATE's MSE convention).

    SLATE reports ``((x − x̂)²).sum() / B`` on images in [0, 1], i.e. the batch mean of this
    function's output; Table 3 of Chang et al. uses the same scale (a 96x96 CLEVR image with a
    per-value error of 4e-4 scores about 10.7). Divide by C·H·W for the per-value mean.

    Args:
        target: (B, C, H, W) images in [0, 1].
        prediction: (B, C, H, W) reconstructions on the same scale (not clamped).

    Returns:
        (B,) per-image sum of squared errors, in the dtype of the inputs.
    """
    if target.shape != prediction.shape or target.dim() != 4:
        raise ValueError(
            "per_image_squared_error expects target and prediction of the same shape (B, C, H, W); got "
            f"{tuple(target.shape)} and {tuple(prediction.shape)}"
        )
    return (target - prediction).pow(2).sum(dim=(1, 2, 3))
