"""The model of an experiment config (registry lookup + the model's builder)."""

from __future__ import annotations

from implicit_slots.config import ExperimentConfig
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.models.registry import get_model_spec

__all__ = ["ExperimentSetupError", "build_model"]


class ExperimentSetupError(ValueError):
    """The config does not fit the model, the data or the run folder (the message names the key or path)."""


def build_model(config: ExperimentConfig) -> ObjectCentricModel:
    """The model of ``config`` (registry lookup + the model's builder), parameters freshly initialised.

    Raises:
        ExperimentSetupError: the builder rejected a value of the ``model:`` section, or a registry did not
            know a name in it (the message names it).
    """
    try:
        return get_model_spec(config.model.name).build(config.model.config)
    except ValueError as error:
        raise ExperimentSetupError(f"model {config.model.name!r}: {error}") from error
    except KeyError as error:  # a registry's lookup (its message lists the valid names)
        raise ExperimentSetupError(f"model {config.model.name!r}: {error.args[0]}") from error
