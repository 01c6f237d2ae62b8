"""Gradient estimators: how a fixed point found by a forward solver is differentiated.

An estimator wraps the forward solve, so every combination shares one interface::

    solution = estimator(f, z0, forward_solver)

- :class:`UnrolledGradient` (paper: "vanilla"): back-propagation through every forward iteration.
  Only with the plain iteration solver; memory grows with the number of iterations.
- :class:`NeumannGradient` of order k: solve without the tape, then apply ``f`` k times with the tape
  from the detached fixed point. Its gradient is the k-term truncation of the Neumann series
  ``(I − J)⁻¹ ≈ Σ_{i<k} J^i`` (paper Eq. 3); k = 1 is the paper's implicit slot attention (Fig. 2).
- :class:`ImplicitGradient` (implicit function theorem, paper Eqs. 1-2): solve without the tape, apply
  ``f`` once with the tape, and on the backward pass replace the incoming gradient g by the solution u of
  ``uᵀ = uᵀ J_f(z*) + g`` (found by a backward solver), so that the parameters receive
  ``g (I − J)⁻¹ ∂f/∂θ``.

Neither the Neumann nor the IFT estimator sends gradient to ``z0`` (in slot attention: the learned
initialisation's mean and scale receive no gradient), exactly as in the paper.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from implicit_slots.fixed_point.solvers import FixedPointIteration, ForwardSolver, get_solver
from implicit_slots.fixed_point.types import FixedPointMap, Solution, SolverStats, residual_norms


def _finish(f: FixedPointMap, fixed_point: Tensor, forward: SolverStats, compute_residual: bool) -> Solution:
    """Build the :class:`Solution`, measuring the residual at the returned point (one tape-free f call)."""
    if compute_residual:
        with torch.no_grad():
            absolute, relative = residual_norms(fixed_point.detach(), f(fixed_point.detach()))
    else:  # fall back to the forward solver's last recorded residual
        absolute, relative = forward.absolute_trace[:, -1], forward.relative_trace[:, -1]
    return Solution(fixed_point, absolute, relative, forward)


# The IFT backward solver's budget and tolerance, one default for every layer that exposes them (``solve``,
# ``get_gradient``, ``SlotAttention``, ``SlotAttentionConfig``): the paper's Broyden runs at most 7 steps
# forward and backward (§5.2). Callers that want a converged adjoint on a generic problem pass more.
DEFAULT_BACKWARD_MAX_ITERATIONS = 7
DEFAULT_BACKWARD_TOLERANCE = 1e-6


class GradientEstimator(abc.ABC):
    """Base class: ``estimator(f, z0, forward_solver) -> Solution``."""

    name: str = ""

    def __call__(
        self, f: FixedPointMap, z0: Tensor, forward_solver: ForwardSolver, *, compute_residual: bool = True
    ) -> Solution:
        """Find the fixed point of ``f`` from ``z0`` with ``forward_solver`` and attach gradients.

        Args:
            f: the map, (B, ...) -> (B, ...); closes over the parameters and inputs to differentiate.
            z0: (B, ...) initial state.
            forward_solver: the solver used for the forward pass.
            compute_residual: measure the residual at the returned point (one extra tape-free
                evaluation of ``f``); if False, report the solver's last recorded residual.
        """
        return self._estimate(f, z0, forward_solver, compute_residual)

    @abc.abstractmethod
    def _estimate(
        self, f: FixedPointMap, z0: Tensor, forward_solver: ForwardSolver, compute_residual: bool
    ) -> Solution: ...


class UnrolledGradient(GradientEstimator):
    """Back-propagation through every iteration of the forward solver (the vanilla baseline)."""

    name = "unrolled"

    def _estimate(
        self, f: FixedPointMap, z0: Tensor, forward_solver: ForwardSolver, compute_residual: bool
    ) -> Solution:
        if not isinstance(forward_solver, FixedPointIteration):
            raise ValueError(
                f"the 'unrolled' gradient back-propagates through plain iterations and needs the "
                f"'iteration' solver, got {forward_solver.name!r}; use 'neumann' or 'ift' with it"
            )
        if forward_solver.return_iterate != "last":
            raise ValueError("the 'unrolled' gradient needs return_iterate='last'")
        result = forward_solver.solve(f, z0)
        return _finish(f, result.state, result.stats, compute_residual)


class NeumannGradient(GradientEstimator):
    """k differentiable applications of ``f`` after a tape-free solve (k-term Neumann truncation).

    Args:
        order: k >= 1, the number of differentiable applications.
    """

    name = "neumann"

    def __init__(self, order: int = 1) -> None:
        if order < 1:
            raise ValueError(f"neumann order must be >= 1, got {order}")
        self.order = order

    def __repr__(self) -> str:
        return f"NeumannGradient(order={self.order})"

    def _estimate(
        self, f: FixedPointMap, z0: Tensor, forward_solver: ForwardSolver, compute_residual: bool
    ) -> Solution:
        with torch.no_grad():
            result = forward_solver.solve(f, z0)
        z = result.state.detach()
        for _ in range(self.order):
            z = f(z)
        return _finish(f, z, result.stats, compute_residual)


class ImplicitGradient(GradientEstimator):
    """Implicit-function-theorem gradient with a backward solver for ``uᵀ = uᵀ J + g`` (Eq. 2).

    Args:
        backward_solver: solver (name or instance) for the linear fixed point in u.
        max_iterations: its maximum number of iterations.
        tolerance: its tolerance (on the relative residual of the linear fixed point).
    """

    name = "ift"

    def __init__(
        self,
        backward_solver: str | ForwardSolver = "broyden",
        max_iterations: int = DEFAULT_BACKWARD_MAX_ITERATIONS,
        tolerance: float = DEFAULT_BACKWARD_TOLERANCE,
    ) -> None:
        self.backward_solver = get_solver(backward_solver, max_iterations, tolerance)

    def __repr__(self) -> str:
        return f"ImplicitGradient(backward_solver={self.backward_solver!r})"

    def _estimate(
        self, f: FixedPointMap, z0: Tensor, forward_solver: ForwardSolver, compute_residual: bool
    ) -> Solution:
        with torch.no_grad():
            result = forward_solver.solve(f, z0)
        if not torch.is_grad_enabled():
            return _finish(f, f(result.state), result.stats, compute_residual)
        z_star = result.state.detach().requires_grad_()
        f_z = f(z_star)
        solution = _finish(f, f_z, result.stats, compute_residual)
        if not f_z.requires_grad:  # nothing to differentiate (no parameter requires grad)
            return solution
        backward_solver = self.backward_solver
        solving = [False]  # the vector-Jacobian products below pass through this hook again

        def solve_adjoint(grad: Tensor | None) -> Tensor | None:
            if solving[0] or grad is None:
                return None

            # u = vjp(u) + g, i.e. uᵀ = uᵀ J + g, solved from u0 = 0 (DEQ's backward hook).
            def adjoint_map(u: Tensor) -> Tensor:
                (vjp,) = torch.autograd.grad(f_z, z_star, u, retain_graph=True)
                return vjp + upstream

            upstream = grad

            solving[0] = True
            try:
                with torch.enable_grad():
                    adjoint = backward_solver.solve(adjoint_map, torch.zeros_like(grad))
            finally:
                solving[0] = False
            solution.backward = adjoint.stats
            return adjoint.state.detach()

        f_z.register_hook(solve_adjoint)
        return solution


_ESTIMATORS: dict[str, type[GradientEstimator]] = {
    "unrolled": UnrolledGradient,
    "neumann": NeumannGradient,
    "ift": ImplicitGradient,
}


def available_gradients() -> list[str]:
    """Names of the registered gradient estimators."""
    return sorted(_ESTIMATORS)


def get_gradient(
    name: str | GradientEstimator,
    *,
    neumann_order: int = 1,
    backward_solver: str | ForwardSolver = "broyden",
    backward_max_iterations: int = DEFAULT_BACKWARD_MAX_ITERATIONS,
    backward_tolerance: float = DEFAULT_BACKWARD_TOLERANCE,
) -> GradientEstimator:
    """Build a gradient estimator by name (or pass an instance through unchanged).

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    if isinstance(name, GradientEstimator):
        return name
    if name == "unrolled":
        return UnrolledGradient()
    if name == "neumann":
        return NeumannGradient(neumann_order)
    if name == "ift":
        return ImplicitGradient(backward_solver, backward_max_iterations, backward_tolerance)
    raise KeyError(f"unknown gradient estimator {name!r}; valid estimators: {available_gradients()}")
