"""Models built around slot attention: SLATE, the slot-attention autoencoder and set prediction."""

from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.models.registry import ModelSpec, available_models, get_model_spec, register_model

__all__ = [
    "Batch",
    "LossOutput",
    "ModelOutput",
    "ModelSpec",
    "ObjectCentricModel",
    "available_models",
    "get_model_spec",
    "register_model",
]
