"""Forward solvers: find z* with f(z*) = z* for a batch of independent problems.

Every solver works on any state shape with a leading batch dimension (B, ...): vector operations
(norms, Anderson's least squares, Broyden's low-rank updates) act on each sample flattened to (B, D),
while ``f`` is always called on tensors of the original shape. Each solver

- evaluates ``f`` at most ``max_iterations`` times,
- records the per-sample absolute and relative residual of every evaluated iterate,
- stops as soon as every sample's residual (``stop_mode``: relative or absolute) is below ``tolerance``
  (``tolerance=0`` never stops early: exactly ``max_iterations`` evaluations),
- returns the last iterate (``return_iterate="last"``, plain iteration's default) or, per sample, the
  evaluated iterate with the lowest residual (``"best"``, as DEQ / torchdeq do; Anderson's and Broyden's
  default).

Anderson and Broyden never crash on a singular or ill-conditioned step: the affected samples take a
plain fixed-point step instead and the fallback is counted in :class:`SolverStats`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from implicit_slots.fixed_point.types import RELATIVE_EPSILON, FixedPointMap, SolverResult, SolverStats

ReturnIterate = Literal["last", "best"]
StopMode = Literal["relative", "absolute"]


class ForwardSolver(abc.ABC):
    """Base class of the solvers. Subclasses implement :meth:`_iterate`.

    Args:
        max_iterations: maximum number of evaluations of ``f``.
        tolerance: stop when every sample's residual is below this (0 disables early stopping; the solve
            then never reads a value back from the device).
        stop_mode: which residual the tolerance applies to: "relative" or "absolute".
        return_iterate: "last" (the final iterate) or "best" (the lowest-residual evaluated iterate);
            None: the solver's ``default_return_iterate`` ("last" for plain iteration, whose last iterate
            is what unrolling differentiates; "best" for Anderson and Broyden, whose last step can land far
            from the best point they evaluated).
    """

    name: str = ""
    default_return_iterate: ReturnIterate = "last"

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate | None = None,
    ) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if stop_mode not in ("relative", "absolute"):
            raise ValueError(f"stop_mode must be 'relative' or 'absolute', got {stop_mode!r}")
        if return_iterate is None:
            return_iterate = self.default_return_iterate
        if return_iterate not in ("last", "best"):
            raise ValueError(f"return_iterate must be 'last' or 'best', got {return_iterate!r}")
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.stop_mode = stop_mode
        self.return_iterate: ReturnIterate = return_iterate

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
    """Collects residual traces, the per-sample best iterate and the stopping decision.

    Everything stays on the device; the only value read back is the "all converged" flag, and only when
    the tolerance is positive (with tolerance 0 the budget alone decides, so nothing is read).
    """

    def __init__(self, z0: Tensor, solver: ForwardSolver) -> None:
        self.batch = z0.shape[0]
        self.tolerance = solver.tolerance
        self.relative_mode = solver.stop_mode == "relative"
        self.track_best = solver.return_iterate == "best"
        self.absolute: list[Tensor] = []
        self.relative: list[Tensor] = []
        self.fallbacks = torch.zeros(self.batch, dtype=torch.long, device=z0.device)
        self.best_state = z0
        self.best_residual = torch.full((self.batch,), float("inf"), dtype=z0.dtype, device=z0.device)

    def record(self, z: Tensor, f_z: Tensor) -> bool:
        """Record the residual of iterate ``z`` (with ``f_z = f(z)``); return True when all converged."""
        with torch.no_grad():
            z, f_z = z.detach(), f_z.detach()
            f_flat = f_z.reshape(self.batch, -1)
            absolute = torch.linalg.vector_norm(f_flat - z.reshape(self.batch, -1), dim=1)  # (B,)
            relative = absolute / (torch.linalg.vector_norm(f_flat, dim=1) + RELATIVE_EPSILON)
            self.absolute.append(absolute)
            self.relative.append(relative)
            residual = relative if self.relative_mode else absolute
            if self.track_best:
                better = residual < self.best_residual  # (B,); a NaN residual is never better
                self.best_residual = torch.where(better, residual, self.best_residual)
                mask = better.view(-1, *([1] * (z.dim() - 1)))
                self.best_state = torch.where(mask, z, self.best_state)
            if self.tolerance == 0:
                return False
            return bool((residual <= self.tolerance).all())  # the one device-to-host read

    def add_fallbacks(self, mask: Tensor) -> None:
        """Count one fallback for each sample where ``mask`` (B,) is True."""
        self.fallbacks += mask

    def stats(self) -> SolverStats:
        relative, absolute = torch.stack(self.relative, dim=1), torch.stack(self.absolute, dim=1)
        last = relative[:, -1] if self.relative_mode else absolute[:, -1]
        return SolverStats(
            absolute_trace=absolute,
            relative_trace=relative,
            steps=len(self.absolute),
            converged=last <= self.tolerance,
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

    The pairs live in preallocated ring buffers (B, m, D) and the bordered least-squares system in a
    preallocated (B, m + 1, m + 1) tensor, so an iteration is a fixed, short sequence of batched tensor
    operations (the minimiser does not depend on the order of the pairs).

    Args:
        memory: number of past iterates used (m).
        regularisation: Tikhonov term relative to the mean squared residual norm (lambda).
        mixing: the damping beta in (0, 1].
    """

    name = "anderson"
    default_return_iterate: ReturnIterate = "best"

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        memory: int = 5,
        regularisation: float = 1e-4,
        mixing: float = 1.0,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate | None = None,
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
        shape, batch = z0.shape, z0.shape[0]
        memory = min(self.memory, self.max_iterations)
        z = z0
        values = z0.new_zeros(batch, memory, z0[0].numel())  # (B, m, D): the last m values f(z_i)
        residuals = torch.zeros_like(values)  # (B, m, D): their residuals f(z_i) − z_i
        states = torch.zeros_like(values) if self.mixing != 1 else None  # (B, m, D): z_i, for damping only
        # The bordered system [[0, 1ᵀ], [1, G Gᵀ + λ I]] [ν, α] = [1, 0] gives the constrained minimiser.
        system = z0.new_zeros(batch, memory + 1, memory + 1)
        system[:, 0, 1:] = 1
        system[:, 1:, 0] = 1
        rhs = z0.new_zeros(batch, memory + 1, 1)
        rhs[:, 0] = 1
        eye = torch.eye(memory, dtype=z0.dtype, device=z0.device)
        for index in range(self.max_iterations):
            f_z = f(z)
            done = tracker.record(z, f_z)
            if done or (tracker.track_best and index == self.max_iterations - 1):
                return f_z  # converged, or the last iterate is not wanted: no final mix
            slot = index % memory
            z_flat, f_flat = z.reshape(batch, -1), f_z.reshape(batch, -1)
            values[:, slot] = f_flat
            residuals[:, slot] = f_flat - z_flat
            if states is not None:
                states[:, slot] = z_flat
            count = min(index + 1, memory)
            if count == 1:
                z = self.mixing * f_z + (1 - self.mixing) * z if self.mixing != 1 else f_z
                continue
            n = count + 1
            z = self._mix(
                residuals[:, :count],
                values[:, :count],
                None if states is None else states[:, :count],
                system[:, :n, :n],
                rhs[:, :n],
                eye[:count, :count],
                f_flat,
                z_flat,
                tracker,
            ).view(shape)
        return z

    def _mix(
        self,
        residuals: Tensor,
        values: Tensor,
        states: Tensor | None,
        system: Tensor,
        rhs: Tensor,
        eye: Tensor,
        f_z: Tensor,
        z: Tensor,
        tracker: _Tracker,
    ) -> Tensor:
        """The next iterate (B, D) from the stored residuals, values and states (B, n, D); ``f_z``, ``z``
        (B, D) give the plain step taken where the least-squares system fails."""
        gram = torch.bmm(residuals, residuals.transpose(1, 2))  # (B, n, n)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(gram.dtype).tiny)  # (B,)
        system[:, 1:, 1:] = torch.addcmul(gram, (self.regularisation * scale)[:, None, None], eye)
        solution, info = torch.linalg.solve_ex(system, rhs)  # (B, n + 1, 1)
        alpha = solution[:, 1:].transpose(1, 2)  # (B, 1, n)
        mixed = torch.bmm(alpha, values).squeeze(1)  # (B, D)
        plain = f_z
        if states is not None:
            mixed = self.mixing * mixed + (1 - self.mixing) * torch.bmm(alpha, states).squeeze(1)
            plain = self.mixing * f_z + (1 - self.mixing) * z
        # A singular system or a non-finite weight falls back to a plain step.
        failed = (info != 0) | ~torch.isfinite(alpha).all(dim=2).squeeze(1)  # (B,)
        tracker.add_fallbacks(failed)
        return torch.where(failed[:, None], plain, mixed)


class BroydenSolver(ForwardSolver):
    """Broyden's method ("good" Broyden) on g(z) = f(z) − z with low-rank inverse-Jacobian updates.

    The inverse Jacobian of g starts at −I (so the first step is a plain fixed-point step) and receives
    one Sherman-Morrison rank-1 update per evaluation: ``B⁻¹ = −I + Σ u_i v_iᵀ = −I + U Vᵀ``, stored as the
    factors in preallocated (B, D, m) and (B, m, D) buffers (unused columns are zero; once ``memory`` is
    full the oldest factor is overwritten), so that each product with B⁻¹ is two batched matrix products.
    A sample whose update denominator is tiny or whose step is not finite skips the update and takes a
    plain fixed-point step (counted as fallback).

    Args:
        memory: maximum number of rank-1 factors kept (default: ``max_iterations``).
    """

    name = "broyden"
    default_return_iterate: ReturnIterate = "best"

    def __init__(
        self,
        max_iterations: int,
        tolerance: float = 0.0,
        *,
        memory: int | None = None,
        stop_mode: StopMode = "relative",
        return_iterate: ReturnIterate | None = None,
    ) -> None:
        super().__init__(max_iterations, tolerance, stop_mode=stop_mode, return_iterate=return_iterate)
        self.memory = memory if memory is not None else max_iterations
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")

    @torch.no_grad()
    def _iterate(self, f: FixedPointMap, z0: Tensor, tracker: _Tracker) -> Tensor:
        shape, batch = z0.shape, z0.shape[0]
        f_z = f(z0)
        done = tracker.record(z0, f_z)
        if done or self.max_iterations == 1:
            return f_z
        z = z0.reshape(batch, -1)  # (B, D)
        g = f_z.reshape(batch, -1) - z  # g(z) = f(z) − z
        memory = min(self.memory, self.max_iterations - 1)
        us = z.new_zeros(batch, memory, z.shape[1])  # (B, m, D): rows u_iᵀ
        vs = torch.zeros_like(us)  # (B, m, D): rows v_iᵀ
        stored = 0  # factors in use: rows [0, stored) of us and vs
        step = g  # −B⁻¹ g with B⁻¹ = −I
        for index in range(self.max_iterations - 1):
            z = z + step
            f_z = f(z.view(shape))
            if tracker.record(z.view(shape), f_z) or (
                tracker.track_best and index == self.max_iterations - 2
            ):
                return f_z  # converged, or the last iterate is not wanted: no final update
            g_new = f_z.reshape(batch, -1) - z
            u_old, v_old = us[:, :stored], vs[:, :stored]  # (B, n, D) each
            # Two products with the old inverse B⁻¹ = −I + Σ u_i v_iᵀ (two batched matrix products each):
            # h = B⁻¹ g_new and vᵀ = δzᵀ B⁻¹, with δz = z_new − z = step. Because step = −B⁻¹ g, the
            # Sherman-Morrison factor needs B⁻¹ δg = h + step, and the new step
            # −B⁻¹_new g_new = −h − u (vᵀ g_new) needs no further product with the factors.
            h = torch.baddbmm(
                g_new.unsqueeze(1), torch.bmm(g_new.unsqueeze(1), v_old.transpose(1, 2)), u_old, beta=-1
            ).squeeze(1)  # (B, D)
            delta_z = step.unsqueeze(1)  # (B, 1, D)
            v = torch.baddbmm(delta_z, torch.bmm(delta_z, u_old.transpose(1, 2)), v_old, beta=-1).squeeze(1)
            delta_g = g_new - g  # (B, D)
            denominator = (v * delta_g).sum(dim=1, keepdim=True)  # (B, 1): vᵀ δg
            u = -h / denominator  # (B, D): (δz − B⁻¹ δg) / (vᵀ δg) with B⁻¹ δg = h + δz
            scale = torch.linalg.vector_norm(step, dim=1, keepdim=True) * torch.linalg.vector_norm(
                delta_g, dim=1, keepdim=True
            )
            ok = (denominator.abs() > 1e-10 * scale.clamp_min(1e-30)) & torch.isfinite(u).all(1, keepdim=True)
            u, v = torch.where(ok, u, 0.0), torch.where(ok, v, 0.0)
            slot = index % memory
            if stored == memory:  # the oldest factor is replaced: take it out of h
                h = h - us[:, slot] * (vs[:, slot] * g_new).sum(dim=1, keepdim=True)
            else:
                stored += 1
            us[:, slot], vs[:, slot] = u, v
            g = g_new
            step = -(h + u * (v * g_new).sum(dim=1, keepdim=True))  # −B⁻¹_new g_new
            finite = torch.isfinite(step).all(dim=1, keepdim=True)
            step = torch.where(finite, step, g)
            tracker.add_fallbacks((~ok | ~finite).squeeze(1))
        return (z + step).view(shape)


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
