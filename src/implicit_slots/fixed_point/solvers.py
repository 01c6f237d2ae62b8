"""Forward solvers: find z* with f(z*) = z* for a batch of independent problems.

Every solver works on any state shape with a leading batch dimension (B, ...): vector operations
(norms, Anderson's least squares, Broyden's low-rank updates) act on each sample flattened to (B, D),
while ``f`` is always called on tensors of the original shape. Each solver

- evaluates ``f`` at most ``max_iterations`` times,
- records the per-sample absolute and relative residual of every evaluated iterate,
- stops as soon as every sample's residual (``stop_mode``: relative or absolute) is below ``tolerance``
  (``tolerance=0`` never stops early: exactly ``max_iterations`` evaluations),
- returns the last iterate (``return_iterate="last"``) or, per sample, the evaluated iterate with the
  lowest residual (``"best"``, as DEQ / torchdeq do).

Anderson and Broyden never crash on a singular or ill-conditioned step: the affected samples take a
plain fixed-point step instead and the fallback is counted in :class:`SolverStats`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from implicit_slots.fixed_point.types import FixedPointMap, SolverResult, SolverStats, residual_norms

ReturnIterate = Literal["last", "best"]
StopMode = Literal["relative", "absolute"]


class ForwardSolver(abc.ABC):
    """Base class of the solvers. Subclasses implement :meth:`_iterate`.

    Args:
        max_iterations: maximum number of evaluations of ``f``.
        tolerance: stop when every sample's residual is below this (0 disables early stopping).
        stop_mode: which residual the tolerance applies to: "relative" or "absolute".
        return_iterate: "last" (the final iterate) or "best" (the lowest-residual evaluated iterate).
    """

    name: str = ""

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate = "last",
    ) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if stop_mode not in ("relative", "absolute"):
            raise ValueError(f"stop_mode must be 'relative' or 'absolute', got {stop_mode!r}")
        if return_iterate not in ("last", "best"):
            raise ValueError(f"return_iterate must be 'last' or 'best', got {return_iterate!r}")
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.stop_mode = stop_mode
        self.return_iterate = return_iterate

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_iterations={self.max_iterations}, tolerance={self.tolerance}, "
            f"stop_mode={self.stop_mode!r}, return_iterate={self.return_iterate!r})"
        )

    def solve(self, f: FixedPointMap, z0: Tensor) -> SolverResult:
        """Solve ``f(z) = z`` from ``z0`` (B, ...).

        Gradients flow through the iterations only if the caller enables them and the solver is
        differentiable (plain iteration); accelerated solvers always run without the tape.
        """
        # Solver arithmetic (norms, least squares, low-rank updates) runs in at least fp32, also when the
        # state or f's output is bf16 / fp16 (autocast); f still receives states in z0's dtype. For fp32
        # and fp64 states the casts are no-ops that return the same tensors.
        dtype = z0.dtype
        work = torch.promote_types(dtype, torch.float32)

        def f_work(z: Tensor) -> Tensor:
            return f(z.to(dtype)).to(work)

        tracker = _Tracker(z0.to(work), self)
        last = self._iterate(f_work, z0.to(work), tracker)
        state = tracker.best_state if self.return_iterate == "best" else last
        return SolverResult(state=state.to(dtype), stats=tracker.stats())

    @abc.abstractmethod
    def _iterate(self, f: FixedPointMap, z0: Tensor, tracker: _Tracker) -> Tensor:
        """Run the iterations, calling ``tracker.record`` after each evaluation; return the last iterate."""


class _Tracker:
    """Collects residual traces, the per-sample best iterate and the stopping decision."""

    def __init__(self, z0: Tensor, solver: ForwardSolver) -> None:
        self.solver = solver
        batch = z0.shape[0]
        self.absolute: list[Tensor] = []
        self.relative: list[Tensor] = []
        self.fallbacks = torch.zeros(batch, dtype=torch.long, device=z0.device)
        self.best_state = z0
        self.best_residual = torch.full((batch,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.converged = torch.zeros(batch, dtype=torch.bool, device=z0.device)

    def record(self, z: Tensor, f_z: Tensor) -> bool:
        """Record the residual of iterate ``z`` (with ``f_z = f(z)``); return True when all converged."""
        with torch.no_grad():
            absolute, relative = residual_norms(z.detach(), f_z.detach())
            self.absolute.append(absolute)
            self.relative.append(relative)
            residual = relative if self.solver.stop_mode == "relative" else absolute
            if self.solver.return_iterate == "best":
                better = residual < self.best_residual
                self.best_residual = torch.where(better, residual, self.best_residual)
                mask = better.reshape(-1, *([1] * (z.dim() - 1)))
                self.best_state = torch.where(mask, z.detach(), self.best_state.detach())
            self.converged = residual <= self.solver.tolerance
            return bool(self.converged.all())

    def add_fallbacks(self, mask: Tensor) -> None:
        self.fallbacks += mask.to(torch.long)

    def stats(self) -> SolverStats:
        return SolverStats(
            absolute_trace=torch.stack(self.absolute, dim=1),
            relative_trace=torch.stack(self.relative, dim=1),
            steps=len(self.absolute),
            converged=self.converged,
            fallbacks=self.fallbacks,
        )


class FixedPointIteration(ForwardSolver):
    """Plain fixed-point iteration ``z_{t+1} = f(z_t)`` (the paper's "iteration", Fig. 2).

    With ``tolerance=0`` and ``return_iterate="last"`` this is exactly ``f`` applied
    ``max_iterations`` times, and it is differentiable when run with the tape (the unrolled estimator).
    """

    name = "iteration"

    def _iterate(self, f: FixedPointMap, z0: Tensor, tracker: _Tracker) -> Tensor:
        z = z0
        for _ in range(self.max_iterations):
            f_z = f(z)
            done = tracker.record(z, f_z)
            z = f_z
            if done:
                break
        return z


class AndersonSolver(ForwardSolver):
    """Anderson acceleration (type II, Walker & Ni 2011) with Tikhonov regularisation.

    Keeps the last ``memory`` pairs (z_i, f(z_i)); the next iterate mixes the f-values with weights
    alpha minimising ``‖Σ alpha_i (f(z_i) − z_i)‖`` subject to ``Σ alpha_i = 1``:
    ``z_next = beta Σ alpha_i f(z_i) + (1 − beta) Σ alpha_i z_i``.

    Args:
        memory: number of past iterates used (m).
        regularisation: Tikhonov term relative to the mean squared residual norm (lambda).
        mixing: the damping beta in (0, 1].
    """

    name = "anderson"

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        memory: int = 5,
        regularisation: float = 1e-4,
        mixing: float = 1.0,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate = "last",
    ) -> None:
        super().__init__(max_iterations, tolerance, stop_mode=stop_mode, return_iterate=return_iterate)
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        if not 0 < mixing <= 1:
            raise ValueError(f"mixing must be in (0, 1], got {mixing}")
        self.memory = memory
        self.regularisation = regularisation
        self.mixing = mixing

    @torch.no_grad()
    def _iterate(self, f: FixedPointMap, z0: Tensor, tracker: _Tracker) -> Tensor:
        shape = z0.shape
        batch = shape[0]
        xs: list[Tensor] = []  # each (B, D)
        fs: list[Tensor] = []
        z = z0
        for _ in range(self.max_iterations):
            f_z = f(z)
            done = tracker.record(z, f_z)
            xs.append(z.reshape(batch, -1))
            fs.append(f_z.reshape(batch, -1))
            xs, fs = xs[-self.memory :], fs[-self.memory :]
            if done:
                return f_z
            z = self._mix(xs, fs, tracker).reshape(shape)
        return z

    def _mix(self, xs: list[Tensor], fs: list[Tensor], tracker: _Tracker) -> Tensor:
        x = torch.stack(xs, dim=1)  # (B, m, D)
        fx = torch.stack(fs, dim=1)  # (B, m, D)
        m = x.shape[1]
        plain = self.mixing * fx[:, -1] + (1 - self.mixing) * x[:, -1]
        if m == 1:
            return plain
        g = fx - x  # (B, m, D)
        gram = torch.bmm(g, g.transpose(1, 2))  # (B, m, m)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
        eye = torch.eye(m, dtype=g.dtype, device=g.device)
        gram = gram + self.regularisation * scale[:, None, None] * eye
        # Bordered system [[0, 1ᵀ], [1, G Gᵀ + λ I]] [ν, α] = [1, 0] gives the constrained minimiser.
        system = torch.zeros(x.shape[0], m + 1, m + 1, dtype=g.dtype, device=g.device)
        system[:, 0, 1:] = 1
        system[:, 1:, 0] = 1
        system[:, 1:, 1:] = gram
        rhs = torch.zeros(x.shape[0], m + 1, dtype=g.dtype, device=g.device)
        rhs[:, 0] = 1
        solution, info = torch.linalg.solve_ex(system, rhs)
        alpha = solution[:, 1:]  # (B, m)
        failed = (info != 0) | ~torch.isfinite(alpha).all(dim=1)
        alpha = torch.nan_to_num(alpha)
        mixed = self.mixing * torch.einsum("bm,bmd->bd", alpha, fx)
        mixed = mixed + (1 - self.mixing) * torch.einsum("bm,bmd->bd", alpha, x)
        failed = failed | ~torch.isfinite(mixed).all(dim=1)
        tracker.add_fallbacks(failed)
        return torch.where(failed[:, None], plain, mixed)


class BroydenSolver(ForwardSolver):
    """Broyden's method ("good" Broyden) on g(z) = f(z) − z with low-rank inverse-Jacobian updates.

    The inverse Jacobian of g starts at −I (so the first step is a plain fixed-point step) and receives
    one Sherman-Morrison rank-1 update per evaluation: ``B⁻¹ = −I + Σ u_i v_iᵀ``, stored as the factors
    (at most ``memory`` of them; the oldest are dropped). A sample whose update denominator is tiny or
    whose step is not finite skips the update and takes a plain fixed-point step (counted as fallback).

    Args:
        memory: maximum number of rank-1 factors kept (default: ``max_iterations``).
    """

    name = "broyden"

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        memory: int | None = None,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate = "last",
    ) -> None:
        super().__init__(max_iterations, tolerance, stop_mode=stop_mode, return_iterate=return_iterate)
        self.memory = memory if memory is not None else max_iterations
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")

    @torch.no_grad()
    def _iterate(self, f: FixedPointMap, z0: Tensor, tracker: _Tracker) -> Tensor:
        shape = z0.shape
        batch = shape[0]
        us: list[Tensor] = []  # each (B, D)
        vs: list[Tensor] = []

        def inverse_times(x: Tensor) -> Tensor:  # B⁻¹ x
            out = -x
            for u, v in zip(us, vs):
                out = out + u * (v * x).sum(dim=1, keepdim=True)
            return out

        def transpose_inverse_times(x: Tensor) -> Tensor:  # xᵀ B⁻¹
            out = -x
            for u, v in zip(us, vs):
                out = out + v * (u * x).sum(dim=1, keepdim=True)
            return out

        z = z0.reshape(batch, -1)
        f_z = f(z0)
        done = tracker.record(z0, f_z)
        g = f_z.reshape(batch, -1) - z
        if done or self.max_iterations == 1:
            return f_z
        step = g  # −B⁻¹ g with B⁻¹ = −I
        for _ in range(self.max_iterations - 1):
            z_new = z + step
            f_new = f(z_new.reshape(shape))
            done = tracker.record(z_new.reshape(shape), f_new)
            g_new = f_new.reshape(batch, -1) - z_new
            if done:
                return f_new
            delta_z, delta_g = z_new - z, g_new - g
            v = transpose_inverse_times(delta_z)  # δzᵀ B⁻¹
            denominator = (v * delta_g).sum(dim=1, keepdim=True)
            u = (delta_z - inverse_times(delta_g)) / denominator
            scale = delta_z.norm(dim=1, keepdim=True) * delta_g.norm(dim=1, keepdim=True)
            bad = (denominator.abs() <= 1e-10 * scale.clamp_min(1e-30)) | ~torch.isfinite(u).all(
                1, keepdim=True
            )
            u = torch.where(bad, torch.zeros_like(u), u)
            v = torch.where(bad, torch.zeros_like(v), v)
            us.append(u)
            vs.append(v)
            if len(us) > self.memory:
                us.pop(0)
                vs.pop(0)
            z, g = z_new, g_new
            step = -inverse_times(g)
            bad_step = ~torch.isfinite(step).all(dim=1, keepdim=True)
            step = torch.where(bad_step, g, step)
            tracker.add_fallbacks(bad.squeeze(1) | bad_step.squeeze(1))
        return (z + step).reshape(shape)


SolverFactory = Callable[..., ForwardSolver]

_SOLVERS: dict[str, type[ForwardSolver]] = {}


def register_solver(cls: type[ForwardSolver]) -> type[ForwardSolver]:
    """Register a solver class under its ``name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _SOLVERS[cls.name] = cls
    return cls


for _cls in (FixedPointIteration, AndersonSolver, BroydenSolver):
    register_solver(_cls)


def available_solvers() -> list[str]:
    """Names of the registered solvers."""
    return sorted(_SOLVERS)


def get_solver(
    name: str | ForwardSolver,
    max_iterations: int,
    tolerance: float = 0.0,
    **options: object,
) -> ForwardSolver:
    """Build a solver by name (or pass an instance through unchanged).

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    if isinstance(name, ForwardSolver):
        return name
    if name not in _SOLVERS:
        raise KeyError(f"unknown solver {name!r}; valid solvers: {available_solvers()}")
    return _SOLVERS[name](max_iterations, tolerance, **options)  # type: ignore[arg-type]
