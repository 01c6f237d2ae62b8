"""Diagnostics against exact values."""

import pytest
import torch
from torch import nn

from implicit_slots.diagnostics import (
    estimate_spectral_norm,
    estimate_spectral_radius,
    gradient_norms,
    relative_residual,
    slot_attention_jacobian_norm,
)
from implicit_slots.slot_attention import SlotAttention

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_spectral_norm_of_a_linear_map_is_exact() -> None:
    A = torch.randn(3, 6, 6, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", A, z)

    sigma = estimate_spectral_norm(f, torch.zeros(3, 6, dtype=torch.float64), iterations=300)
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(A, 2), rtol=1e-6, atol=0)


def test_spectral_radius_of_a_symmetric_map() -> None:
    S = torch.randn(2, 5, 5, dtype=torch.float64)
    S = S + S.transpose(1, 2)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", S, z)

    radius = estimate_spectral_radius(f, torch.zeros(2, 5, dtype=torch.float64), iterations=500)
    expected = torch.linalg.eigvalsh(S).abs().max(dim=1).values
    torch.testing.assert_close(radius, expected, rtol=1e-4, atol=0)


def test_slot_attention_jacobian_norm_matches_full_jacobian() -> None:
    torch.manual_seed(0)
    module = SlotAttention(8, 3, 6, 12, 4).double()
    out = module(torch.randn(2, 15, 8, dtype=torch.float64))
    sigma = slot_attention_jacobian_norm(module, out, iterations=100)
    keys, values = module.keys_and_values(out.inputs)
    jacobian = torch.func.jacrev(lambda s: module.cell(s, keys, values).slots)(out.slots.detach())
    for b in range(2):
        block = jacobian[b, :, :, b].reshape(18, 18)
        torch.testing.assert_close(sigma[b], torch.linalg.matrix_norm(block, 2), rtol=5e-3, atol=0)


def test_relative_residual() -> None:
    z = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(relative_residual(lambda v: 2 * v, z), torch.tensor([0.5]), rtol=1e-6, atol=0)


def test_gradient_norms_per_group_and_total() -> None:
    a, b, c = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    norms = gradient_norms({"first": [a], "second": [b, c], "empty": [c]})
    assert norms == {"first": 3.0, "second": 4.0, "empty": 0.0, "total": 5.0}
