"""Set prediction of object properties (Locatello et al.), registered as model ``"set_prediction"``."""

from implicit_slots.models.registry import register_model
from implicit_slots.models.set_prediction.model import (
    SetPredictionConfig,
    SetPredictionModel,
    SetPredictionOutput,
    build_set_prediction,
)

register_model("set_prediction", SetPredictionConfig, build_set_prediction)

__all__ = ["SetPredictionConfig", "SetPredictionModel", "SetPredictionOutput", "build_set_prediction"]
