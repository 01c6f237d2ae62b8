"""The training tests' test-only model is registered for each test and removed afterwards."""

from collections.abc import Iterator

import pytest
from tiny_training_setup import register_tiny_model, unregister_tiny_model


@pytest.fixture(autouse=True)
def _tiny_model_registered() -> Iterator[None]:
    register_tiny_model()
    yield
    unregister_tiny_model()
