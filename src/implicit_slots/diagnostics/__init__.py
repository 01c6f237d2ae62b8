"""Diagnostics of a fixed-point map and of training: residuals, Jacobian norms, gradient norms.

All functions are per sample where the quantity is per sample, cheap enough to call every few hundred
training steps, and never touch the autograd graph of the caller.
"""

from implicit_slots.diagnostics.gradients import gradient_norms
from implicit_slots.diagnostics.jacobian import (
    estimate_spectral_norm,
    estimate_spectral_radius,
    relative_residual,
    slot_attention_jacobian_norm,
)

__all__ = [
    "estimate_spectral_norm",
    "estimate_spectral_radius",
    "gradient_norms",
    "relative_residual",
    "slot_attention_jacobian_norm",
]
