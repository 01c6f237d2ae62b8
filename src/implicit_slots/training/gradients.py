"""Gradient norms and clipping over a list of parameters (the engine's ``training.grad_clip`` switch)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["clip_gradients", "total_gradient_norm"]


def total_gradient_norm(params: Iterable[nn.Parameter], norm: str = "l2") -> Tensor:
    """Norm of all gradients taken together, as a float32 scalar on the gradients' device.

    Args:
        params: parameters; those without ``.grad`` are ignored.
        norm: ``"l2"`` (square root of the sum of squares of every entry) or ``"inf"`` (largest absolute
            entry).

    Returns:
        Scalar tensor; NaN/Inf when any gradient entry is; 0 when no parameter has a gradient.
    """
    params = list(params)
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:  # on the parameters' device, like a norm of gradients would be
        return torch.zeros((), device=params[0].device if params else None)
    if norm == "l2":  # the computation clip_grad_norm_ makes, so its result can be reused for clipping
        return torch.nn.utils.get_total_norm([g.float() for g in grads], 2.0)
    if norm == "inf":
        return torch.stack([g.float().abs().max() for g in grads]).max()
    raise ValueError(f"unknown gradient norm {norm!r}; valid: ['l2', 'inf']")


def clip_gradients(
    params: Iterable[nn.Parameter], norm: str | None, max_norm: float, l2_norm: Tensor | None = None
) -> Tensor | None:
    """Scale all gradients together by ``min(1, max_norm / (total_norm + 1e-6))``.

    ``norm="l2"`` is the usual global-norm clipping; ``norm="inf"`` is official SLATE's
    ``clip_grad_norm_(params, 1.0, 'inf')``: every gradient is scaled so that the largest absolute entry
    over all parameters is at most ``max_norm`` (directions are kept; entries are not clamped one by one).

    Args:
        params: parameters whose ``.grad`` is clipped in place.
        norm: None (no clipping), ``"l2"`` or ``"inf"``.
        max_norm: the bound (> 0).
        l2_norm: the l2 norm of these gradients already computed by :func:`total_gradient_norm`; with
            ``norm="l2"`` it is used instead of computing the norm again.

    Returns:
        The total norm of the chosen kind before clipping, or None when ``norm`` is None.
    """
    if norm is None:
        return None
    if norm not in ("l2", "inf"):
        raise ValueError(f"unknown clipping norm {norm!r}; valid: [None, 'l2', 'inf']")
    params = list(params)
    if norm == "l2" and l2_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, l2_norm)
        return l2_norm
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0 if norm == "l2" else float("inf"))
