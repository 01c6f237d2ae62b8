"""The slot-attention autoencoder (object discovery), registered as model ``"autoencoder"``."""

from implicit_slots.models.autoencoder.model import (
    AutoencoderConfig,
    AutoencoderOutput,
    SlotAttentionAutoencoder,
    build_autoencoder,
)
from implicit_slots.models.registry import register_model

register_model("autoencoder", AutoencoderConfig, build_autoencoder)

__all__ = ["AutoencoderConfig", "AutoencoderOutput", "SlotAttentionAutoencoder", "build_autoencoder"]
