"""The slot-attention section of a model config and the builder that turns it into a module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from implicit_slots.fixed_point import VARIANTS, available_gradients, available_solvers
from implicit_slots.fixed_point.gradients import DEFAULT_BACKWARD_MAX_ITERATIONS, DEFAULT_BACKWARD_TOLERANCE
from implicit_slots.slot_attention.module import SLOT_INITIALIZATIONS, SlotAttention


@dataclass
class SlotAttentionConfig:
    """Hyperparameters of :class:`SlotAttention` (see its docstring for the meaning of each).

    ``variant`` picks the paper's solver / gradient pair (vanilla, IN, IB, BN, BB); ``solver``,
    ``gradient`` and ``backward_solver`` override it when set (null = the variant's choice).
    ``initialization``: ``gaussian`` (the paper's) or ``learned_queries`` (BO-QSA).
    """

    num_slots: int = 7
    slot_dim: int = 64
    mlp_hidden_dim: int = 128
    num_heads: int = 1
    num_iterations: int = 3
    variant: str = "IN"
    solver: str | None = None
    gradient: str | None = None
    tolerance: float = 0.0
    neumann_order: int = 1
    backward_solver: str | None = None
    backward_max_iterations: int = DEFAULT_BACKWARD_MAX_ITERATIONS
    backward_tolerance: float = DEFAULT_BACKWARD_TOLERANCE
    return_iterate: str | None = None
    epsilon: float = 1e-8
    initialization: str = "gaussian"

    def validate(self, key: str = "model.slot_attention") -> None:
        """Raise ``ValueError`` naming the dotted key (``key`` + field) of a value out of range or a name
        that no registry knows (variant, solvers, gradient estimator, initialisation)."""
        check_positive_integers(
            self,
            (
                "num_slots",
                "slot_dim",
                "mlp_hidden_dim",
                "num_heads",
                "num_iterations",
                "neumann_order",
                "backward_max_iterations",
            ),
            key,
        )
        if self.variant not in VARIANTS:
            raise ValueError(f"{key}.variant: unknown variant {self.variant!r}; valid: {list(VARIANTS)}")
        for name, kind, valid in (
            ("solver", "solver", available_solvers()),
            ("backward_solver", "solver", available_solvers()),
            ("gradient", "gradient estimator", available_gradients()),
        ):
            value = getattr(self, name)
            if value is not None and value not in valid:
                raise ValueError(f"{key}.{name}: unknown {kind} {value!r}; valid: {valid}")
        if self.return_iterate not in (None, "last", "best"):
            valid_iterates = [None, "last", "best"]
            raise ValueError(
                f"{key}.return_iterate: invalid value {self.return_iterate!r}; valid: {valid_iterates}"
            )
        if self.initialization not in SLOT_INITIALIZATIONS:
            valid = list(SLOT_INITIALIZATIONS)
            raise ValueError(f"{key}.initialization: invalid value {self.initialization!r}; valid: {valid}")
        for name in ("tolerance", "backward_tolerance", "epsilon"):
            if getattr(self, name) < 0:
                raise ValueError(f"{key}.{name} must be >= 0, got {getattr(self, name)!r}")


def _check_positive(value: object, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")


def check_positive_integers(section: object, names: Sequence[str], key: str = "model") -> None:
    """Raise ``ValueError`` naming ``key.name`` for the first of ``names`` whose value in ``section`` is not
    a positive integer (a bool is not one); the config sections' ``validate`` methods share it."""
    for name in names:
        _check_positive(getattr(section, name), f"{key}.{name}")


def build_slot_attention(input_dim: int, config: SlotAttentionConfig) -> SlotAttention:
    """Build a :class:`SlotAttention` reading ``input_dim``-sized features from a config."""
    return SlotAttention(
        input_dim,
        config.num_slots,
        config.slot_dim,
        config.mlp_hidden_dim,
        config.num_iterations,
        num_heads=config.num_heads,
        variant=config.variant,
        solver=config.solver,
        gradient=config.gradient,
        tolerance=config.tolerance,
        neumann_order=config.neumann_order,
        backward_solver=config.backward_solver,
        backward_max_iterations=config.backward_max_iterations,
        backward_tolerance=config.backward_tolerance,
        return_iterate=config.return_iterate,
        epsilon=config.epsilon,
        initialization=config.initialization,
    )
