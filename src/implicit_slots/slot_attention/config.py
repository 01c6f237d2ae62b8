"""The slot-attention section of a model config and the builder that turns it into a module."""

from __future__ import annotations

from dataclasses import dataclass

from implicit_slots.slot_attention.module import SlotAttention


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
    backward_max_iterations: int = 7
    backward_tolerance: float = 1e-6
    return_iterate: str | None = None
    epsilon: float = 1e-8
    initialization: str = "gaussian"


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
