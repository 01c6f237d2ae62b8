"""Gradient norms per parameter group (computed before clipping by the engine)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def gradient_norms(groups: Mapping[str, Iterable[nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the gradients of each named group, and of all of them together.

    Args:
        groups: name -> parameters (parameters without a gradient are skipped).

    Returns:
        ``{name: ‖grad‖₂ for each group, "total": ‖all grads‖₂}``; a group with no gradient gives 0.
    """
    norms: dict[str, float] = {}
    squares = []
    for name, params in groups.items():
        grads = [p.grad.detach() for p in params if p.grad is not None]
        if not grads:
            norms[name] = 0.0
            continue
        square = torch.stack([g.float().pow(2).sum() for g in grads]).sum()
        squares.append(square)
        norms[name] = float(square.sqrt())
    norms["total"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms
