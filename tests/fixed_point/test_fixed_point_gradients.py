"""Gradient estimators against exact gradients on small float64 problems."""

import pytest
import torch
from problems import AffineMap, TanhContraction

from implicit_slots.fixed_point import solve

SOLVERS = ["iteration", "anderson", "broyden"]


@pytest.mark.parametrize("forward_solver", SOLVERS)
@pytest.mark.parametrize("backward_solver", SOLVERS)
def test_ift_matches_exact_implicit_gradient(forward_solver: str, backward_solver: str) -> None:
    problem = TanhContraction.random()
    upstream = torch.randn(3, 5, dtype=torch.float64)
    result = solve(
        problem,
        torch.zeros(3, 5, dtype=torch.float64),
        solver=forward_solver,
        gradient="ift",
        max_iterations=200,
        tolerance=1e-13,
        backward_solver=backward_solver,
        backward_max_iterations=200,
        backward_tolerance=1e-13,
    )
    (grad,) = torch.autograd.grad((result.fixed_point * upstream).sum(), problem.x)
    exact = problem.implicit_gradient(result.fixed_point.detach(), upstream)
    assert (grad - exact).norm() / exact.norm() <= 1e-6
    assert result.backward is not None and result.backward.steps >= 1
    assert result.backward.relative_trace.shape == (3, result.backward.steps)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_neumann_equals_truncated_series(order: int) -> None:
    # For f(z) = A z + x the order-k estimator's gradient is exactly Σ_{i<k} Aⁱ (w.r.t. x).
    problem = AffineMap.random()
    upstream = torch.randn(3, 4, dtype=torch.float64)
    result = solve(problem, torch.zeros(3, 4, dtype=torch.float64), gradient="neumann", neumann_order=order)
    (grad,) = torch.autograd.grad((result.fixed_point * upstream).sum(), problem.x)
    series = sum(torch.linalg.matrix_power(problem.A, i) for i in range(order))
    expected = torch.einsum("bi,bij->bj", upstream, series)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_neumann_of_high_order_approaches_ift() -> None:
    problem = AffineMap.random(contraction=0.5)
    upstream = torch.randn(3, 4, dtype=torch.float64)
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    grads = {}
    # The IFT's adjoint converged too (the default budget is the paper's 7 steps).
    converged = {"backward_tolerance": 1e-14, "backward_max_iterations": 100}
    for name, kwargs in {"neumann": {"neumann_order": 60}, "ift": converged}.items():
        result = solve(problem, z0, gradient=name, max_iterations=100, tolerance=1e-14, **kwargs)  # type: ignore[arg-type]
        (grads[name],) = torch.autograd.grad((result.fixed_point * upstream).sum(), problem.x)
    torch.testing.assert_close(grads["neumann"], grads["ift"], rtol=1e-10, atol=1e-12)


def test_unrolled_equals_autograd_through_explicit_loop() -> None:
    problem = TanhContraction.random()
    z0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    result = solve(problem, z0, gradient="unrolled", max_iterations=6, tolerance=0.0)
    z = z0
    for _ in range(6):
        z = problem(z)
    torch.testing.assert_close(result.fixed_point, z, rtol=0, atol=0)
    upstream = torch.randn(3, 5, dtype=torch.float64)
    got = torch.autograd.grad((result.fixed_point * upstream).sum(), (problem.x, z0))
    expected = torch.autograd.grad((z * upstream).sum(), (problem.x, z0))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("gradient", ["neumann", "ift"])
def test_gradcheck(gradient: str) -> None:
    # Exact when the fixed point is converged: the IFT gradient; Neumann of order 1 on an affine map with
    # A = 0 (then Σ_{i<1} Aⁱ = I is exact).
    A = torch.zeros(2, 3, 3, dtype=torch.float64) if gradient == "neumann" else None

    def fixed_point_of(x: torch.Tensor) -> torch.Tensor:
        problem = TanhContraction.random(batch=2, dim=3)
        problem.x = x
        if A is not None:
            problem.A = A
        return solve(
            problem,
            torch.zeros(2, 3, dtype=torch.float64),
            gradient=gradient,
            max_iterations=300,
            tolerance=1e-14,
            backward_tolerance=1e-14,
            backward_max_iterations=100,
        ).fixed_point

    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fixed_point_of, (x,), eps=1e-6, atol=1e-6)


def test_no_gradient_reaches_initial_state_for_implicit_estimators() -> None:
    problem = TanhContraction.random()
    for gradient in ["neumann", "ift"]:
        z0 = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
        result = solve(problem, z0, gradient=gradient)
        result.fixed_point.sum().backward()
        assert z0.grad is None


def test_unrolled_requires_iteration_solver() -> None:
    problem = TanhContraction.random()
    with pytest.raises(ValueError, match="'iteration' solver"):
        solve(problem, torch.zeros(3, 5, dtype=torch.float64), solver="broyden", gradient="unrolled")


def test_unknown_names_list_valid_ones() -> None:
    problem = TanhContraction.random()
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    with pytest.raises(KeyError, match=r"anderson.*broyden.*iteration"):
        solve(problem, z0, solver="newton")
    with pytest.raises(KeyError, match=r"ift.*neumann.*unrolled"):
        solve(problem, z0, gradient="phantom")


def test_eval_mode_without_grad_builds_no_graph() -> None:
    problem = TanhContraction.random()
    for gradient in ["unrolled", "neumann", "ift"]:
        with torch.no_grad():
            result = solve(problem, torch.zeros(3, 5, dtype=torch.float64), gradient=gradient)
        assert not result.fixed_point.requires_grad
