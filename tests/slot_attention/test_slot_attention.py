"""Invariants of slot attention and its fixed-point variants."""

import itertools

import pytest
import torch

from implicit_slots.slot_attention import SlotAttention, SlotAttentionConfig, build_slot_attention

VARIANTS = ["vanilla", "IN", "IB", "BN", "BB"]


def make(
    variant: str = "IN", iterations: int = 3, heads: int = 1, seed: int = 0, **kwargs: object
) -> SlotAttention:
    torch.manual_seed(seed)
    return SlotAttention(12, 4, 8, 16, iterations, num_heads=heads, variant=variant, **kwargs).double()  # type: ignore[arg-type]


def inputs(batch: int = 3, num_inputs: int = 20) -> torch.Tensor:
    return torch.randn(batch, num_inputs, 12, dtype=torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("heads", [1, 2])
def test_equivariant_to_permuting_slots(variant: str, heads: int) -> None:
    module = make(variant, heads=heads)
    x = inputs()
    initial = torch.randn(3, 4, 8, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    out = module(x, initial)
    permuted = module(x, initial[:, perm])
    torch.testing.assert_close(permuted.slots, out.slots[:, perm], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(permuted.attention, out.attention[:, :, perm], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_sums_to_one_over_slots(variant: str) -> None:
    out = make(variant, heads=2)(inputs())
    assert out.attention.shape == (3, 20, 4)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(3, 20, dtype=torch.float64))
    assert (out.attention >= 0).all()


@pytest.mark.parametrize("n", [1, 3, 7])
def test_implicit_equals_vanilla_with_one_more_iteration(n: int) -> None:
    x = inputs()
    initial = torch.randn(3, 4, 8, dtype=torch.float64)
    implicit = make("IN", n, seed=5)(x, initial)
    vanilla = make("vanilla", n + 1, seed=5)(x, initial)
    torch.testing.assert_close(implicit.slots, vanilla.slots, rtol=0, atol=0)
    torch.testing.assert_close(implicit.attention, vanilla.attention, rtol=0, atol=0)


def test_vanilla_is_the_unrolled_loop() -> None:
    module = make("vanilla", 4)
    x = inputs()
    initial = torch.randn(3, 4, 8, dtype=torch.float64)
    keys, values = module.keys_and_values(x)
    slots = initial
    for _ in range(4):
        step = module.cell(slots, keys, values)
        slots = step.slots
    out = module(x, initial)
    torch.testing.assert_close(out.slots, slots, rtol=0, atol=0)
    torch.testing.assert_close(out.attention, step.attention, rtol=0, atol=0)


SOLVER_GRADIENT_PAIRS = [
    (s, g)
    for s, g in itertools.product(["iteration", "anderson", "broyden"], ["unrolled", "neumann", "ift"])
    if not (g == "unrolled" and s != "iteration")
]


@pytest.mark.parametrize(("solver", "gradient"), SOLVER_GRADIENT_PAIRS)
def test_every_solver_and_estimator_pair_trains(solver: str, gradient: str) -> None:
    module = make(solver=solver, gradient=gradient, iterations=4)
    out = module(inputs())
    loss = out.slots.pow(2).mean() + out.attention[..., 0].mean()
    loss.backward()
    for name, parameter in module.named_parameters():
        if name.startswith("initializer.") and gradient != "unrolled":
            assert parameter.grad is None, name  # the paper's implicit variants do not train the init
        else:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name
    assert out.relative_residual.shape == (3,)
    assert module.variant == "custom"


def test_unrolled_with_broyden_is_refused() -> None:
    with pytest.raises(ValueError, match="'iteration' solver"):
        make(solver="broyden", gradient="unrolled")


def test_unknown_variant_lists_valid_ones() -> None:
    with pytest.raises(KeyError, match=r"vanilla.*IN.*IB.*BN.*BB"):
        make("implicit")


def test_bad_input_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"inputs must be \(B, N, 12\)"):
        make()(torch.randn(3, 20, 7, dtype=torch.float64))


def test_builder_from_config_and_slot_count_override() -> None:
    config = SlotAttentionConfig(num_slots=5, slot_dim=16, mlp_hidden_dim=32, num_iterations=2, variant="BB")
    module = build_slot_attention(10, config)
    assert module.solver.name == "broyden" and module.gradient.name == "ift"
    assert module.solver.return_iterate == "best"  # DEQ's choice for Broyden
    out = module(torch.randn(2, 9, 10), num_slots=3)
    assert out.slots.shape == (2, 3, 16)


def test_initial_slots_are_sampled_per_sample() -> None:
    out = make()(inputs())
    assert not torch.allclose(out.initial_slots[0], out.initial_slots[1])


def test_batch_elements_are_independent() -> None:
    module = make("BB")
    x = inputs()
    initial = torch.randn(3, 4, 8, dtype=torch.float64)
    together = module(x, initial).slots
    alone = module(x[1:2], initial[1:2]).slots
    torch.testing.assert_close(together[1:2], alone, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_runs_under_bf16_autocast(variant: str) -> None:
    torch.manual_seed(0)
    module = SlotAttention(12, 4, 8, 16, 3, variant=variant)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(torch.randn(2, 20, 12))
        loss = out.slots.float().pow(2).mean()
    loss.backward()
    assert out.slots.dtype == torch.float32  # slots keep the dtype of the initial slots
    torch.testing.assert_close(out.attention.float().sum(-1), torch.ones(2, 20), rtol=1e-2, atol=1e-2)
    assert module.cell.gru.weight_hh.grad is not None


def test_implicit_variants_freeze_the_initialisation() -> None:
    assert all(p.requires_grad for p in make("vanilla").initializer.parameters())
    for variant in ["IN", "IB", "BN", "BB"]:
        assert not any(p.requires_grad for p in make(variant).initializer.parameters())
