"""SLATE's reconstruction error: per-image sum over C, H, W."""

import pytest
import torch

from implicit_slots.metrics import per_image_squared_error


def test_per_image_sum_of_squares() -> None:
    target = torch.zeros(2, 3, 4, 5)
    prediction = torch.zeros(2, 3, 4, 5)
    prediction[0] = 0.5  # 60 values, each 0.25
    prediction[1, 1, 2, 3] = -1.0
    assert per_image_squared_error(target, prediction).tolist() == [15.0, 1.0]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        per_image_squared_error(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
