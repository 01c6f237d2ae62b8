"""Shared test set-up: one torch thread (the CI machine has 2 cores and small ops slow down 20-70x when
the other core is busy), deterministic seeds."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
