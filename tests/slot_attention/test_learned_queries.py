"""BO-QSA's learned-query initialisation and its straight-through gradient under every estimator."""

import pytest
import torch

from implicit_slots.slot_attention import (
    LearnedQueryInitializer,
    SlotAttention,
    SlotAttentionConfig,
    build_slot_attention,
)


def make(variant: str = "IN", iterations: int = 3, **kwargs: object) -> SlotAttention:
    torch.manual_seed(0)
    module = SlotAttention(
        12, 4, 8, 16, iterations, variant=variant, initialization="learned_queries", **kwargs
    )  # type: ignore[arg-type]
    return module.double()


def inputs(batch: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 20, 12, dtype=torch.float64)


def loss_of(slots: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 1.0, slots.numel(), dtype=slots.dtype).view_as(slots)
    return (weights * slots).sum() + slots.pow(2).sum()


def queries_of(module: SlotAttention) -> torch.Tensor:
    assert isinstance(module.initializer, LearnedQueryInitializer)
    return module.initializer.queries


def test_queries_are_shared_by_every_image_and_call() -> None:
    module = make()
    first, second = module(inputs()), module(inputs())
    expected = queries_of(module).expand(3, -1, -1)
    torch.testing.assert_close(first.initial_slots, expected, rtol=0, atol=0)
    torch.testing.assert_close(first.slots, second.slots, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["vanilla", "IN", "IB", "BN", "BB"])
def test_values_equal_a_solve_from_the_queries_given_explicitly(variant: str) -> None:
    module = make(variant)
    x = inputs()
    learned = module(x)
    explicit = module(x, queries_of(module).detach().expand(3, -1, -1).clone())
    torch.testing.assert_close(learned.slots, explicit.slots, rtol=0, atol=0)
    torch.testing.assert_close(learned.attention, explicit.attention, rtol=0, atol=0)


def test_in_gives_the_queries_the_gradient_at_the_input_of_the_last_step() -> None:
    module = make("IN", iterations=4)
    x = inputs()
    loss_of(module(x).slots).backward()
    # BO-QSA's bi-level path by hand: the last (differentiable) application starts from the detached
    # solve; the gradient at its input, summed over the images that share the queries.
    keys, values = module.keys_and_values(x)
    with torch.no_grad():
        z = queries_of(module).expand(3, -1, -1)
        for _ in range(4):
            z = module.cell(z, keys, values).slots
    start = z.clone().requires_grad_()
    (expected,) = torch.autograd.grad(
        loss_of(module.cell(start, keys.detach(), values.detach()).slots), start
    )
    torch.testing.assert_close(queries_of(module).grad, expected.sum(0, keepdim=True), rtol=1e-10, atol=1e-12)


def test_vanilla_back_propagates_to_the_queries_through_every_iteration() -> None:
    module = make("vanilla", iterations=3)
    x = inputs()
    loss_of(module(x).slots).backward()
    keys, values = module.keys_and_values(x)
    queries = queries_of(module).detach().clone().requires_grad_()
    z = queries.expand(3, -1, -1)
    for _ in range(3):
        z = module.cell(z, keys.detach(), values.detach()).slots
    (expected,) = torch.autograd.grad(loss_of(z), queries)
    torch.testing.assert_close(queries_of(module).grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["IN", "IB", "BN", "BB"])
def test_the_straight_through_path_leaves_every_other_gradient_unchanged(variant: str) -> None:
    module = make(variant)
    x = inputs()
    loss_of(module(x).slots).backward()
    learned = {n: p.grad.clone() for n, p in module.named_parameters() if not n.startswith("initializer.")}
    assert torch.isfinite(queries_of(module).grad).all() and queries_of(module).grad.abs().sum() > 0
    module.zero_grad()
    loss_of(module(x, queries_of(module).detach().expand(3, -1, -1).clone()).slots).backward()
    for name, grad in learned.items():
        torch.testing.assert_close(dict(module.named_parameters())[name].grad, grad, rtol=1e-10, atol=1e-12)


def test_a_different_slot_count_is_refused() -> None:
    with pytest.raises(ValueError, match="learned_queries initialisation has 4 slots, asked for 6"):
        make()(inputs(), num_slots=6)


def test_an_unknown_initialization_is_named() -> None:
    config = SlotAttentionConfig(num_slots=3, slot_dim=8, mlp_hidden_dim=8, initialization="zeros")
    with pytest.raises(
        ValueError, match="initialization must be one of gaussian, learned_queries, got 'zeros'"
    ):
        build_slot_attention(12, config)


def test_no_gradient_bookkeeping_without_grad() -> None:
    module = make()
    with torch.no_grad():
        out = module(inputs())
    assert not out.slots.requires_grad
