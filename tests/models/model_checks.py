"""Behaviour checks shared by the model tests (every registered model must pass them)."""

import torch

from implicit_slots.models import Batch, ObjectCentricModel


def assert_training_lowers_loss(model: ObjectCentricModel, batch: Batch, steps: int = 8) -> None:
    """A few Adam steps on a fixed batch lower the loss (measured with the same initial slots) by 10%."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss() -> float:
        torch.manual_seed(1)  # the same initial slots for both measurements
        with torch.no_grad():
            return float(model.compute_loss(model(batch), batch).loss)

    before = fixed_loss()
    for _ in range(steps):
        loss = model.compute_loss(model(batch), batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert fixed_loss() < 0.9 * before


def assert_every_parameter_gets_a_gradient(model: ObjectCentricModel, batch: Batch) -> None:
    """One backward pass of the loss reaches every parameter with a non-zero gradient."""
    model.compute_loss(model(batch), batch).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
