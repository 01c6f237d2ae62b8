"""Forward solvers: known fixed points, budgets, statistics, batch independence, robustness."""

import pytest
import torch
from problems import AffineMap, TanhContraction

from implicit_slots.fixed_point import (
    AndersonSolver,
    BroydenSolver,
    FixedPointIteration,
    available_solvers,
    get_solver,
    solve,
)
from implicit_slots.slot_attention import SlotAttention

SOLVERS = ["iteration", "anderson", "broyden"]


@pytest.mark.parametrize("name", SOLVERS)
def test_finds_the_fixed_point_of_an_affine_contraction(name: str) -> None:
    problem = AffineMap.random(dim=6, contraction=0.8)
    result = solve(
        problem, torch.zeros(3, 6, dtype=torch.float64), solver=name, max_iterations=300, tolerance=1e-12
    )
    torch.testing.assert_close(result.fixed_point.detach(), problem.fixed_point(), rtol=1e-9, atol=1e-9)
    assert result.forward.converged.all()
    assert (result.relative_residual < 1e-9).all()


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_accelerated_solvers_beat_plain_iteration_on_a_slow_contraction(name: str) -> None:
    # A = 0.97 * rotation-like: iteration needs hundreds of steps for 1e-8.
    dim = 8
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    problem = AffineMap(A=(0.97 * q).expand(2, dim, dim).clone(), x=torch.randn(2, dim, dtype=torch.float64))
    z0 = torch.zeros(2, dim, dtype=torch.float64)
    plain = solve(problem, z0, solver="iteration", max_iterations=60, tolerance=1e-8, gradient="neumann")
    # Anderson needs a memory of at least the dimension to match GMRES on a linear problem.
    solver = AndersonSolver(60, 1e-8, memory=dim + 2) if name == "anderson" else name
    fast = solve(problem, z0, solver=solver, max_iterations=60, tolerance=1e-8, gradient="neumann")
    assert fast.forward.converged.all()
    assert not plain.forward.converged.any()


@pytest.mark.parametrize("name", SOLVERS)
def test_respects_max_iterations_and_records_traces(name: str) -> None:
    problem = TanhContraction.random(contraction=0.95)
    calls = []

    def counted(z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return problem(z)

    solver = get_solver(name, max_iterations=4, tolerance=0.0)
    with torch.no_grad():
        result = solver.solve(counted, torch.zeros(3, 5, dtype=torch.float64))
    assert len(calls) == 4 and result.stats.steps == 4
    assert result.stats.absolute_trace.shape == (3, 4)
    assert result.stats.relative_trace.shape == (3, 4)
    assert result.stats.converged.shape == (3,) and result.stats.fallbacks.shape == (3,)


def test_iteration_with_zero_tolerance_is_exactly_n_applications() -> None:
    problem = TanhContraction.random()
    z = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        result = FixedPointIteration(7, 0.0).solve(problem, z)
        expected = z
        for _ in range(7):
            expected = problem(expected)
    torch.testing.assert_close(result.state, expected, rtol=0, atol=0)


def test_stops_when_every_sample_converged() -> None:
    problem = AffineMap.random(contraction=0.3)
    with torch.no_grad():
        result = FixedPointIteration(100, 1e-6).solve(problem, torch.zeros(3, 4, dtype=torch.float64))
    assert result.stats.steps < 100
    assert result.stats.converged.all()
    assert (result.stats.relative_trace[:, -1] <= 1e-6).all()


def test_residual_definitions() -> None:
    problem = AffineMap.random()
    z0 = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        result = FixedPointIteration(1, 0.0).solve(problem, z0)
        f_z0 = problem(z0)
    absolute = (f_z0 - z0).norm(dim=1)
    torch.testing.assert_close(result.stats.absolute_trace[:, 0], absolute)
    torch.testing.assert_close(result.stats.relative_trace[:, 0], absolute / (f_z0.norm(dim=1) + 1e-9))


def test_best_iterate_has_the_lowest_recorded_residual() -> None:
    problem = TanhContraction.random(contraction=0.9)
    z0 = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        result = BroydenSolver(6, 0.0, return_iterate="best").solve(problem, z0)
        reached = ((problem(result.state) - result.state).norm(dim=1)) / (
            problem(result.state).norm(dim=1) + 1e-9
        )
    torch.testing.assert_close(reached, result.stats.lowest_relative_residual)


@pytest.mark.parametrize("name", SOLVERS)
def test_batch_elements_are_independent(name: str) -> None:
    problem = TanhContraction.random(batch=4, contraction=0.9)
    z0 = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        together = get_solver(name, 5, 0.0).solve(problem, z0).state
        for b in range(4):
            single = TanhContraction(problem.A[b : b + 1], problem.W, problem.x[b : b + 1])
            alone = get_solver(name, 5, 0.0).solve(single, z0[b : b + 1]).state
            torch.testing.assert_close(together[b : b + 1], alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SOLVERS)
def test_any_state_shape(name: str) -> None:
    def f(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(z.flip(-1)) + 1.0

    z0 = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    result = solve(f, z0, solver=name, max_iterations=100, tolerance=1e-10)
    assert result.fixed_point.shape == z0.shape
    assert (result.relative_residual < 1e-9).all()


def test_anderson_singular_history_falls_back_without_crashing() -> None:
    # A constant map makes every residual difference identical: a singular least-squares system.
    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(z)

    solver = AndersonSolver(6, 0.0, regularisation=0.0)
    with torch.no_grad():
        result = solver.solve(f, torch.zeros(2, 3, dtype=torch.float64))
    assert torch.isfinite(result.state).all()
    torch.testing.assert_close(result.state, torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_map_without_fixed_point_never_crashes(name: str) -> None:
    # f(z) = z + 1 has no fixed point and a constant residual: every Broyden update is 0 / 0 and
    # every Anderson least-squares system is singular.
    def f(z: torch.Tensor) -> torch.Tensor:
        return z + 1

    solver = get_solver(name, 5, 0.0, **({"regularisation": 0.0} if name == "anderson" else {}))
    with torch.no_grad():
        result = solver.solve(f, torch.zeros(2, 3, dtype=torch.float64))
    assert torch.isfinite(result.state).all()
    assert result.stats.fallbacks.min() >= 1
    assert not result.stats.converged.any()


def test_registry_and_bad_arguments() -> None:
    assert available_solvers() == ["anderson", "broyden", "iteration"]
    with pytest.raises(ValueError, match="max_iterations"):
        FixedPointIteration(0)
    with pytest.raises(ValueError, match="return_iterate"):
        FixedPointIteration(3, return_iterate="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mixing"):
        AndersonSolver(3, mixing=0.0)


@pytest.mark.parametrize("name", SOLVERS)
def test_low_precision_states_are_solved_in_fp32(name: str) -> None:
    seen = []

    def f(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.dtype)
        return 0.5 * torch.tanh(z) + 1.0

    z0 = torch.zeros(2, 3, dtype=torch.bfloat16)
    with torch.no_grad():
        result = get_solver(name, 20, 1e-3).solve(f, z0)
    assert result.state.dtype == torch.bfloat16 and set(seen) == {torch.bfloat16}
    assert result.stats.relative_trace.dtype == torch.float32
    assert torch.isfinite(result.state).all()


def test_accelerated_solvers_return_their_best_iterate_by_default() -> None:
    assert get_solver("iteration", 5).return_iterate == "last"  # what unrolling differentiates
    assert get_solver("anderson", 5).return_iterate == "best"
    assert get_solver("broyden", 5).return_iterate == "best"
    # The slot-attention update at random initialisation is not a contraction: Broyden's last step can land
    # far from the best point it evaluated, and solve() must return the best one.
    torch.manual_seed(0)
    module = SlotAttention(16, 4, 16, 32, num_iterations=1).requires_grad_(False)
    keys, values = module.keys_and_values(torch.randn(8, 32, 16))

    def f(z: torch.Tensor) -> torch.Tensor:
        return module.cell(z, keys, values).slots

    z0 = module.initializer(8, 4)
    for name in ("anderson", "broyden"):
        default = solve(f, z0, solver=name, max_iterations=40, tolerance=0.0, gradient="neumann")
        with torch.no_grad():
            best = get_solver(name, 40, return_iterate="best").solve(f, z0).state
            reached = (f(best) - best).flatten(1).norm(dim=1) / (f(best).flatten(1).norm(dim=1) + 1e-9)
            torch.testing.assert_close(default.fixed_point, f(best))  # solve() returned f(best iterate)
        torch.testing.assert_close(reached, default.forward.lowest_relative_residual, rtol=1e-4, atol=1e-7)


def _reference_broyden(f, z0: torch.Tensor, budget: int, memory: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Textbook good Broyden on g = f(z) − z with explicit lists of Sherman-Morrison factors."""
    z, us, vs = z0.clone(), [], []

    def inverse(x: torch.Tensor) -> torch.Tensor:  # B⁻¹ x with B⁻¹ = −I + Σ u vᵀ
        return -x + sum((u * (v * x).sum(1, keepdim=True) for u, v in zip(us, vs)), torch.zeros_like(x))

    def transposed(x: torch.Tensor) -> torch.Tensor:  # xᵀ B⁻¹
        return -x + sum((v * (u * x).sum(1, keepdim=True) for u, v in zip(us, vs)), torch.zeros_like(x))

    g = f(z) - z
    step = g
    for _ in range(budget - 1):
        z_new = z + step
        g_new = f(z_new) - z_new
        delta_z, delta_g = z_new - z, g_new - g
        v = transposed(delta_z)
        us.append((delta_z - inverse(delta_g)) / (v * delta_g).sum(1, keepdim=True))
        vs.append(v)
        del us[:-memory], vs[:-memory]
        z, g = z_new, g_new
        step = -inverse(g)
    return z + step


@pytest.mark.parametrize("memory", [None, 3])
def test_broyden_computes_textbook_broyden(memory: int | None) -> None:
    problem = TanhContraction.random(batch=3, dim=6, contraction=0.9)
    z0 = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        ours = BroydenSolver(9, memory=memory, return_iterate="last").solve(problem, z0).state
        reference = _reference_broyden(problem, z0, 9, memory or 9)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SOLVERS)
def test_a_fixed_budget_reads_nothing_back_from_the_device(name: str) -> None:
    # torch.compile(fullgraph=True) fails on any value read back to Python (a graph break): with tolerance 0
    # the solve must compile whole; with a positive tolerance the convergence check reads a flag back.
    problem = TanhContraction.random(contraction=0.9)
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    fixed = get_solver(name, 4, 0.0)
    compiled = torch.compile(lambda z: fixed.solve(problem, z).state, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(z0), fixed.solve(problem, z0).state)
        early = get_solver(name, 4, 1e-3)
        checked = torch.compile(lambda z: early.solve(problem, z).state, fullgraph=True, backend="eager")
        with pytest.raises(Exception, match=r"(?i)data.dependent|graph break|unsupported|bool"):
            checked(z0)
