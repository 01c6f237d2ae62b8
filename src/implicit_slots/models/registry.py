"""Model registry: a name -> (config dataclass, builder) table used by the engine and the CLI.

Each model package registers itself on import::

    register_model("slate", SlateConfig, build_slate)

``SlateConfig`` is a dataclass (the schema of the ``model:`` section of a config file, minus ``name``);
``build_slate(config) -> ObjectCentricModel`` is the one place that turns the config into objects.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from implicit_slots.models.base import ObjectCentricModel

# Modules that register models when imported (kept explicit so the registry is complete after
# `get_model_spec` without the caller importing anything).
_MODEL_MODULES = (
    "implicit_slots.models.slate",
    "implicit_slots.models.autoencoder",
    "implicit_slots.models.set_prediction",
)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model."""

    name: str
    config_type: type
    build: Callable[[Any], ObjectCentricModel]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_type: type, build: Callable[[Any], ObjectCentricModel]) -> None:
    """Register a model under ``name``; registering the same name twice is an error."""
    if name in _REGISTRY and _REGISTRY[name].build is not build:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelSpec(name, config_type, build)


def _load_all() -> None:
    for module in _MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def available_models() -> list[str]:
    """Names of every registered model."""
    _load_all()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """Look up a model; an unknown name raises ``KeyError`` listing the valid ones."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid models: {sorted(_REGISTRY)}")
    return _REGISTRY[name]
