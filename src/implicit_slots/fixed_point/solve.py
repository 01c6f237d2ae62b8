"""The public entry point: ``solve(f, z0, ...)``."""

from __future__ import annotations

from torch import Tensor

from implicit_slots.fixed_point.gradients import (
    DEFAULT_BACKWARD_MAX_ITERATIONS,
    DEFAULT_BACKWARD_TOLERANCE,
    GradientEstimator,
    get_gradient,
)
from implicit_slots.fixed_point.solvers import ForwardSolver, ReturnIterate, StopMode, get_solver
from implicit_slots.fixed_point.types import FixedPointMap, Solution


def solve(
    f: FixedPointMap,
    z0: Tensor,
    *,
    solver: str | ForwardSolver = "iteration",
    gradient: str | GradientEstimator = "neumann",
    max_iterations: int = 7,
    tolerance: float = 1e-4,
    neumann_order: int = 1,
    backward_solver: str | ForwardSolver = "broyden",
    backward_max_iterations: int = DEFAULT_BACKWARD_MAX_ITERATIONS,
    backward_tolerance: float = DEFAULT_BACKWARD_TOLERANCE,
    return_iterate: ReturnIterate | None = None,
    stop_mode: StopMode = "relative",
    compute_residual: bool = True,
) -> Solution:
    """Find the fixed point ``z* = f(z*)`` and make it differentiable as ``gradient`` says.

    Args:
        f: any callable (B, ...) -> (B, ...) that closes over the parameters and inputs to train.
        z0: (B, ...) initial state.
        solver: forward solver, "iteration" | "anderson" | "broyden" (or a ``ForwardSolver``).
        gradient: "unrolled" | "neumann" | "ift" (or a ``GradientEstimator``).
        max_iterations: forward solver's maximum number of evaluations of ``f``.
        tolerance: forward solver's stopping tolerance (0: always ``max_iterations`` evaluations).
        neumann_order: k of the Neumann estimator (k differentiable applications; 1 = paper Fig. 2).
        backward_solver: solver of the IFT's linear fixed point ``uᵀ = uᵀJ + ∂ℓ/∂z*`` (Eq. 2).
        backward_max_iterations: its maximum number of iterations.
        backward_tolerance: its tolerance.
        return_iterate: "last" iterate or, per sample, the lowest-residual evaluated one ("best");
            default (None): "best" for Anderson and Broyden, "last" for plain iteration.
        stop_mode: whether ``tolerance`` applies to the "relative" or the "absolute" residual.
        compute_residual: measure the residual at the returned point (one extra tape-free call).

    Returns:
        A :class:`Solution`: ``fixed_point`` shaped like ``z0`` (gradients per ``gradient``),
        ``relative_residual`` (B,) at the returned point, solver statistics.

    Raises:
        KeyError: an unknown solver or estimator name (the message lists the valid ones).
        ValueError: ``gradient="unrolled"`` with a solver other than "iteration", bad numbers.
    """
    forward_solver = get_solver(
        solver, max_iterations, tolerance, stop_mode=stop_mode, return_iterate=return_iterate
    )
    estimator = get_gradient(
        gradient,
        neumann_order=neumann_order,
        backward_solver=backward_solver,
        backward_max_iterations=backward_max_iterations,
        backward_tolerance=backward_tolerance,
    )
    return estimator(f, z0, forward_solver, compute_residual=compute_residual)
