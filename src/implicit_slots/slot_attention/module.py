"""Slot attention as a fixed-point map: the one place where cell, solver and gradient estimator meet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from implicit_slots.fixed_point import (
    ForwardSolver,
    GradientEstimator,
    Solution,
    get_gradient,
    get_solver,
    get_variant,
)
from implicit_slots.fixed_point.gradients import DEFAULT_BACKWARD_MAX_ITERATIONS, DEFAULT_BACKWARD_TOLERANCE
from implicit_slots.slot_attention.cell import SlotAttentionCell, xavier_linear


@dataclass
class SlotAttentionOutput:
    """What slot attention returns.

    Attributes:
        slots: (B, K, D) the slots (the fixed point), with gradients as the variant defines.
        attention: (B, N, K) attention of the final differentiable step (sums to 1 over slots).
        initial_slots: (B, K, D) the slots the solve started from.
        inputs: (B, N, input_dim) the inputs slot attention attended to (for diagnostics).
        solution: the fixed-point statistics (residual traces, steps, backward statistics).
    """

    slots: Tensor
    attention: Tensor
    initial_slots: Tensor
    inputs: Tensor
    solution: Solution

    @property
    def relative_residual(self) -> Tensor:
        """(B,) forward relative residual ``‖f(z) − z‖ / ‖f(z)‖`` at the returned slots."""
        return self.solution.relative_residual


class GaussianSlotInitializer(nn.Module):
    """Shared learned Gaussian: ``slots = mu + exp(log_sigma) * N(0, I)`` (reparameterised).

    Under the unrolled gradient, mu and log_sigma are trained through the unrolled iterations. Under the
    Neumann and IFT estimators the solve starts from detached slots, so they receive NO gradient and
    stay at their initialisation, exactly as in the paper's implicit slot attention (Fig. 2).
    """

    def __init__(self, slot_dim: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.empty(1, 1, slot_dim))
        self.log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
        nn.init.xavier_uniform_(self.mu)
        nn.init.xavier_uniform_(self.log_sigma)

    def forward(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, K, D) initial slots in the parameters' dtype; each sample and slot draws its own noise.

        The noise is drawn and scaled in at least float32 (also for bf16 / fp16 parameters), so that its
        distribution is not quantised by a low-precision random draw; only the result is rounded.
        """
        dtype = torch.promote_types(self.mu.dtype, torch.float32)
        noise = torch.randn(
            batch_size, num_slots, self.mu.shape[-1], generator=generator, device=self.mu.device, dtype=dtype
        )  # (B, K, D)
        slots = self.mu.to(dtype) + self.log_sigma.to(dtype).exp() * noise
        return slots.to(self.mu.dtype)


class LearnedQueryInitializer(nn.Module):
    """K learned starting slots, one per slot index, the same for every image (no noise).

    BO-QSA's initialisation (Jia et al., 2023, "Improving object-centric learning with query
    optimization"; github YuLiu-LY/BO-QSA), not the paper's. Each slot index can specialise, for example
    one slot for the background. Under the Neumann and IFT estimators, whose solve starts from detached
    slots, :class:`SlotAttention` gives the queries a straight-through gradient: the differentiable
    applications of the map read ``z + (q − q.detach())``, which has the value ``z``, so the queries
    receive the gradient that reaches the input of those applications (BO-QSA's ``bi-level`` path).
    """

    def __init__(self, num_slots: int, slot_dim: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.empty(1, num_slots, slot_dim))
        nn.init.xavier_uniform_(self.queries)

    def forward(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """The (B, K, D) queries; ``num_slots`` must equal the K they were built with."""
        if num_slots != self.queries.shape[1]:
            raise ValueError(
                f"learned_queries initialisation has {self.queries.shape[1]} slots, asked for {num_slots}; "
                f"the number of slots is fixed when the queries are learned"
            )
        return self.queries.expand(batch_size, -1, -1)


SLOT_INITIALIZATIONS = ("gaussian", "learned_queries")


class SlotAttention(nn.Module):
    """Slot attention whose iterations are a fixed-point solve, trained by any gradient estimator.

    Args:
        input_dim: size of each input feature.
        num_slots: K, number of slots (can be overridden per call).
        slot_dim: D, the slot size.
        mlp_hidden_dim: hidden size of the cell's residual MLP.
        num_iterations: forward solver budget: for "iteration" exactly this many tape-free (or, for
            "vanilla", unrolled) applications; for Broyden / Anderson at most this many evaluations.
            Neumann of order k and IFT add their k (resp. 1) differentiable applications on top, so
            ``IN`` with n iterations equals ``vanilla`` with n + 1 in value (paper Fig. 2).
        num_heads: attention heads.
        variant: paper variant "vanilla" | "IN" | "IB" | "BN" | "BB" (Table 2); ignored for any of
            ``solver`` / ``gradient`` given explicitly.
        solver: forward solver name or instance (overrides the variant's).
        gradient: gradient estimator name or instance (overrides the variant's).
        tolerance: forward early-stopping tolerance on the relative residual (0: fixed iteration count).
        neumann_order: k for the Neumann estimator.
        backward_solver: backward solver of the IFT estimator (overrides the variant's).
        backward_max_iterations: its iteration budget (default: the paper's 7 for Broyden).
        backward_tolerance: its tolerance.
        return_iterate: "last" or "best" iterate of the forward solver (default: the solver's own,
            "best" for Broyden / Anderson as DEQ, "last" for plain iteration).
        epsilon: added to the attention before the weighted mean.
        initialization: "gaussian" (the paper's: a shared learned Gaussian, frozen under Neumann / IFT,
            see :class:`GaussianSlotInitializer`) or "learned_queries" (BO-QSA: K learned slots trained
            through a straight-through path, see :class:`LearnedQueryInitializer`).

    Attributes:
        record_residual: measure the relative residual at the returned slots with one extra tape-free cell
            call (default True). When False, ``relative_residual`` is the forward solver's last recorded
            residual instead; the training loop turns it on only on the steps that log diagnostics
            (:func:`set_residual_recording`).
    """

    def __init__(
        self,
        input_dim: int,
        num_slots: int,
        slot_dim: int,
        mlp_hidden_dim: int,
        num_iterations: int,
        *,
        num_heads: int = 1,
        variant: str = "IN",
        solver: str | ForwardSolver | None = None,
        gradient: str | GradientEstimator | None = None,
        tolerance: float = 0.0,
        neumann_order: int = 1,
        backward_solver: str | None = None,
        backward_max_iterations: int = DEFAULT_BACKWARD_MAX_ITERATIONS,
        backward_tolerance: float = DEFAULT_BACKWARD_TOLERANCE,
        return_iterate: str | None = None,
        epsilon: float = 1e-8,
        initialization: str = "gaussian",
    ) -> None:
        super().__init__()
        if initialization not in SLOT_INITIALIZATIONS:
            raise ValueError(
                f"initialization must be one of {', '.join(SLOT_INITIALIZATIONS)}, got {initialization!r}"
            )
        chosen = get_variant(variant)
        self.solver = get_solver(
            solver if solver is not None else chosen.solver,
            num_iterations,
            tolerance,
            return_iterate=return_iterate,
        )
        self.gradient = get_gradient(
            gradient if gradient is not None else chosen.gradient,
            neumann_order=neumann_order,
            backward_solver=backward_solver if backward_solver is not None else chosen.backward_solver,
            backward_max_iterations=backward_max_iterations,
            backward_tolerance=backward_tolerance,
        )
        if self.gradient.name == "unrolled" and self.solver.name != "iteration":
            raise ValueError(
                f"the 'unrolled' gradient needs the 'iteration' solver, got {self.solver.name!r}"
            )
        self.variant = variant if solver is None and gradient is None else "custom"
        self.input_dim = input_dim
        self.num_slots = num_slots
        self.slot_dim = slot_dim
        self.num_heads = num_heads
        self.num_iterations = num_iterations
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.project_k = xavier_linear(input_dim, slot_dim, bias=False)
        self.project_v = xavier_linear(input_dim, slot_dim, bias=False)
        self.initialization = initialization
        self.initializer: GaussianSlotInitializer | LearnedQueryInitializer
        if initialization == "learned_queries":
            self.initializer = LearnedQueryInitializer(num_slots, slot_dim)
        else:
            self.initializer = GaussianSlotInitializer(slot_dim)
        if initialization == "gaussian" and self.gradient.name != "unrolled":
            # Neumann / IFT start the solve from detached slots: the initialisation can never receive a
            # gradient (paper Fig. 2), so it is frozen rather than silently left out of every update.
            self.initializer.requires_grad_(False)
        self.cell = SlotAttentionCell(slot_dim, mlp_hidden_dim, num_heads, epsilon)
        self.record_residual = True

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, solver={self.solver!r}, gradient={self.gradient!r}, "
            f"initialization={self.initialization!r}"
        )

    @contextmanager
    def fixed_point_override(self, solver: ForwardSolver, gradient: GradientEstimator) -> Iterator[None]:
        """Solve and differentiate with ``solver`` and ``gradient`` inside the ``with`` block, then restore.

        For diagnostics that compare estimators on one trained module (``implicit-slots inspect
        gradients``). Only the solve changes: which parameters require a gradient does not (the Gaussian
        initialiser of a module built for Neumann / IFT stays frozen even under ``unrolled``).

        Args:
            solver: the forward solver (its ``max_iterations`` is the budget).
            gradient: the gradient estimator.

        Raises:
            ValueError: the ``unrolled`` gradient with a solver other than plain iteration.
        """
        if gradient.name == "unrolled" and solver.name != "iteration":
            raise ValueError(f"the 'unrolled' gradient needs the 'iteration' solver, got {solver.name!r}")
        saved = self.solver, self.gradient
        self.solver, self.gradient = solver, gradient
        try:
            yield
        finally:
            self.solver, self.gradient = saved

    def keys_and_values(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """LayerNorm the inputs (B, N, input_dim) and project them once to scaled keys and values.

        Returns:
            keys, values: each (B, H, N, D/H); keys scaled by (D/H)^-1/2.
        """
        batch, num_inputs, _ = inputs.shape
        heads, head_dim = self.num_heads, self.slot_dim // self.num_heads
        inputs = self.norm_inputs(inputs)
        keys = self.project_k(inputs).view(batch, num_inputs, heads, head_dim).transpose(1, 2)
        values = self.project_v(inputs).view(batch, num_inputs, heads, head_dim).transpose(1, 2)
        return keys * head_dim**-0.5, values

    def update_function(self, inputs: Tensor) -> Callable[[Tensor], Tensor]:
        """The fixed-point map ``slots (B, K, D) -> slots`` for these inputs (for diagnostics)."""
        keys, values = self.keys_and_values(inputs)
        return lambda slots: self.cell(slots, keys, values).slots

    def forward(
        self,
        inputs: Tensor,
        initial_slots: Tensor | None = None,
        num_slots: int | None = None,
        generator: torch.Generator | None = None,
    ) -> SlotAttentionOutput:
        """Find the slots for ``inputs``.

        Args:
            inputs: (B, N, input_dim) input features.
            initial_slots: (B, K, D) starting slots; default: sampled from the learned Gaussian.
            num_slots: K when sampling (default: the constructor's ``num_slots``).
            generator: random generator for the initial slots.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_dim:
            raise ValueError(f"inputs must be (B, N, {self.input_dim}), got {tuple(inputs.shape)}")
        if initial_slots is None:
            initial_slots = self.initializer(inputs.shape[0], num_slots or self.num_slots, generator)
        keys, values = self.keys_and_values(inputs)
        # Learned queries under a tape-free solve: the differentiable applications read z + (q − q.detach())
        # (value z), so the queries get the gradient at their input (BO-QSA's straight-through path).
        shortcut = None
        if (
            self.initialization == "learned_queries"
            and self.gradient.name != "unrolled"
            and initial_slots.requires_grad
        ):
            shortcut = initial_slots - initial_slots.detach()
            initial_slots = initial_slots.detach()
        # The attention of a step is kept beside its output slots, so that the one belonging to the
        # returned fixed point can be found whichever solver / estimator produced it.
        recent: list[tuple[Tensor, Tensor]] = []

        def update(slots: Tensor) -> Tensor:
            if shortcut is not None and torch.is_grad_enabled():
                slots = slots + shortcut
            out = self.cell(slots, keys, values)
            new_slots = out.slots.to(slots.dtype)  # under autocast the cell may return bf16
            recent.append((new_slots, out.attention))
            del recent[:-3]
            return new_slots

        solution = self.gradient(update, initial_slots, self.solver, compute_residual=self.record_residual)
        attention = next((a for s, a in recent if s is solution.fixed_point), None)
        if attention is None:  # only if a custom estimator returns a tensor f did not produce
            attention = self.cell(solution.fixed_point, keys, values).attention
        return SlotAttentionOutput(
            slots=solution.fixed_point,
            attention=attention,
            initial_slots=initial_slots,
            inputs=inputs,
            solution=solution,
        )


def set_residual_recording(module: nn.Module, enabled: bool) -> None:
    """Set ``record_residual`` on every :class:`SlotAttention` inside ``module`` (itself included)."""
    for submodule in module.modules():
        if isinstance(submodule, SlotAttention):
            submodule.record_residual = enabled
