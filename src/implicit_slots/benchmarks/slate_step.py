"""The SLATE training step that ``bench train-step`` times, in-process and against official SLATE."""

from __future__ import annotations

import torch

from implicit_slots.models.slate import Slate

__all__ = ["make_optimizer", "training_step"]


def make_optimizer(model: Slate) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """Adam over SLATE's two parameter groups (dVAE 3e-4, the rest 1e-4) and the list of all parameters."""
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(
        [{"params": groups["dvae"], "lr": 3e-4}, {"params": groups["main"], "lr": 1e-4}]
    )
    return optimizer, groups["dvae"] + groups["main"]


def training_step(
    model: Slate, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter], image: torch.Tensor
) -> None:
    """One SLATE training step (forward, loss, backward, inf-norm clip at 1.0, Adam)."""
    optimizer.zero_grad(set_to_none=True)
    batch = {"image": image}
    loss = model.compute_loss(model(batch), batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0, norm_type=float("inf"))
    optimizer.step()
