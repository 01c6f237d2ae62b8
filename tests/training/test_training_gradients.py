"""Each clipping mode changes gradients exactly as defined (hand values)."""

import math

import pytest
import torch
from torch import nn

from implicit_slots.training.gradients import clip_gradients, total_gradient_norm


def _params() -> list[nn.Parameter]:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([0.0, -4.0])
    return [a, b]


def test_no_clipping_leaves_gradients_alone() -> None:
    params = _params()
    assert clip_gradients(params, None, 0.1) is None
    assert params[0].grad.tolist() == [3.0, 0.0] and params[1].grad.tolist() == [0.0, -4.0]


def test_l2_clipping_scales_everything_to_the_global_norm() -> None:
    params = _params()
    before = clip_gradients(params, "l2", 1.0)
    assert float(before) == pytest.approx(5.0)  # sqrt(9 + 16)
    scale = 1.0 / (5.0 + 1e-6)
    assert params[0].grad.tolist() == pytest.approx([3.0 * scale, 0.0])
    assert params[1].grad.tolist() == pytest.approx([0.0, -4.0 * scale])
    assert float(total_gradient_norm(params)) == pytest.approx(1.0, abs=1e-5)


def test_inf_clipping_is_slate_max_abs_scaling_not_clamping() -> None:
    params = _params()
    before = clip_gradients(params, "inf", 2.0)
    assert float(before) == 4.0  # the largest absolute entry over all parameters
    scale = 2.0 / (4.0 + 1e-6)
    # Every entry is scaled by the same factor (3 -> 1.5), not clamped to [-2, 2] (which would leave 3 -> 2).
    assert params[0].grad.tolist() == pytest.approx([3.0 * scale, 0.0])
    assert params[1].grad.tolist() == pytest.approx([0.0, -4.0 * scale])
    assert float(total_gradient_norm(params, "inf")) == pytest.approx(2.0, abs=1e-5)


def test_gradients_below_the_bound_are_unchanged() -> None:
    params = _params()
    clip_gradients(params, "l2", 10.0)
    assert params[0].grad.tolist() == [3.0, 0.0]
    clip_gradients(params, "inf", 4.5)
    assert params[1].grad.tolist() == [0.0, -4.0]


def test_total_norm_flags_non_finite_gradients() -> None:
    params = _params()
    params[1].grad = torch.tensor([math.nan, 1.0])
    assert not torch.isfinite(total_gradient_norm(params))
    assert float(total_gradient_norm([nn.Parameter(torch.zeros(1))])) == 0.0
