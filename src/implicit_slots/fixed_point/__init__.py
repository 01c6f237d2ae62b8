"""Fixed-point solvers and gradient estimators (pure numerics; imports nothing else from the package).

>>> from implicit_slots.fixed_point import solve
>>> result = solve(f, z0, solver="broyden", gradient="ift")          # doctest: +SKIP
>>> result.fixed_point, result.relative_residual                       # doctest: +SKIP
"""

from implicit_slots.fixed_point.gradients import (
    GradientEstimator,
    ImplicitGradient,
    NeumannGradient,
    UnrolledGradient,
    available_gradients,
    get_gradient,
)
from implicit_slots.fixed_point.solve import solve
from implicit_slots.fixed_point.solvers import (
    AndersonSolver,
    BroydenSolver,
    FixedPointIteration,
    ForwardSolver,
    available_solvers,
    get_solver,
    register_solver,
)
from implicit_slots.fixed_point.types import FixedPointMap, Solution, SolverResult, SolverStats
from implicit_slots.fixed_point.variants import VARIANTS, Variant, get_variant

__all__ = [
    "VARIANTS",
    "AndersonSolver",
    "BroydenSolver",
    "FixedPointIteration",
    "FixedPointMap",
    "ForwardSolver",
    "GradientEstimator",
    "ImplicitGradient",
    "NeumannGradient",
    "Solution",
    "SolverResult",
    "SolverStats",
    "UnrolledGradient",
    "Variant",
    "available_gradients",
    "available_solvers",
    "get_gradient",
    "get_solver",
    "get_variant",
    "register_solver",
    "solve",
]
