"""Result types shared by the forward solvers and the gradient estimators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

#: Added to ‖f(z)‖ in the relative residual (as DEQ) so that a zero state does not divide by zero.
RELATIVE_EPSILON = 1e-9

#: A fixed-point map: a callable from a state tensor (B, ...) to a tensor of the same shape.
FixedPointMap = Callable[[Tensor], Tensor]


@dataclass
class SolverStats:
    """Per-sample statistics of one solve (forward, or the backward linear solve of the IFT).

    Attributes:
        absolute_trace: (B, T) ``‖f(z_t) − z_t‖`` at each of the T evaluated iterates.
        relative_trace: (B, T) ``‖f(z_t) − z_t‖ / ‖f(z_t)‖`` at each evaluated iterate.
        steps: number of evaluations of the map (T).
        converged: (B,) whether the sample's residual fell below the tolerance.
        fallbacks: (B,) how many accelerated steps (Anderson / Broyden) were replaced by a plain
            fixed-point step because the update was singular, ill-conditioned or not finite.
    """

    absolute_trace: Tensor
    relative_trace: Tensor
    steps: int
    converged: Tensor
    fallbacks: Tensor

    @property
    def lowest_relative_residual(self) -> Tensor:
        """(B,) the lowest relative residual each sample reached."""
        return self.relative_trace.min(dim=1).values


@dataclass
class SolverResult:
    """What a forward solver returns: the iterate it settled on and its statistics."""

    state: Tensor
    stats: SolverStats


@dataclass
class Solution:
    """The fixed point and everything measured while finding (and differentiating) it.

    Attributes:
        fixed_point: tensor shaped like ``z0``; carries gradients as the estimator defines.
        absolute_residual: (B,) ``‖f(z) − z‖`` at the returned ``fixed_point``.
        relative_residual: (B,) ``‖f(z) − z‖ / ‖f(z)‖`` at the returned ``fixed_point``.
        forward: statistics of the forward solve.
        backward: statistics of the IFT's backward solve; filled in during ``backward()`` (None
            before, and always None for the unrolled and Neumann estimators).
    """

    fixed_point: Tensor
    absolute_residual: Tensor
    relative_residual: Tensor
    forward: SolverStats
    backward: SolverStats | None = field(default=None)

    @property
    def steps(self) -> int:
        """Evaluations of the map taken by the forward solver."""
        return self.forward.steps


def per_sample_norm(x: Tensor) -> Tensor:
    """(B,) Euclidean norm of each sample of a (B, ...) tensor."""
    return x.reshape(x.shape[0], -1).norm(dim=1)


def residual_norms(z: Tensor, f_z: Tensor) -> tuple[Tensor, Tensor]:
    """Absolute and relative residual of ``z`` given ``f_z = f(z)``, per sample, both (B,)."""
    absolute = per_sample_norm(f_z - z)
    relative = absolute / (per_sample_norm(f_z) + RELATIVE_EPSILON)
    return absolute, relative
