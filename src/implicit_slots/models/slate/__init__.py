"""SLATE: a discrete-VAE tokenizer, slot attention over the tokens and an Image-GPT decoder of the tokens.

Registered as model ``"slate"``, and its dVAE alone (two-stage SLATE's first stage) as ``"dvae"``; see
``docs/slate.md``.
"""

from implicit_slots.models.registry import register_model
from implicit_slots.models.slate.config import SlateConfig, build_slate
from implicit_slots.models.slate.dvae import DiscreteVAE, GumbelSample, sample_gumbel_tokens
from implicit_slots.models.slate.dvae_model import (
    DvaeConfig,
    DvaeModel,
    DvaeOutput,
    build_dvae,
    load_dvae_weights,
)
from implicit_slots.models.slate.model import (
    AutoregressiveReconstruction,
    Slate,
    SlateOutput,
    attention_overlays,
)
from implicit_slots.models.slate.transformer import DecoderCache, TransformerDecoder

register_model("slate", SlateConfig, build_slate)
register_model("dvae", DvaeConfig, build_dvae)

__all__ = [
    "AutoregressiveReconstruction",
    "DecoderCache",
    "DiscreteVAE",
    "DvaeConfig",
    "DvaeModel",
    "DvaeOutput",
    "GumbelSample",
    "Slate",
    "SlateConfig",
    "SlateOutput",
    "TransformerDecoder",
    "attention_overlays",
    "build_dvae",
    "build_slate",
    "load_dvae_weights",
    "sample_gumbel_tokens",
]
