"""SLATE: a discrete-VAE tokenizer, slot attention over the tokens and an Image-GPT decoder of the tokens.

Registered as model ``"slate"``; see ``docs/slate.md``.
"""

from implicit_slots.models.registry import register_model
from implicit_slots.models.slate.config import SlateConfig, build_slate
from implicit_slots.models.slate.dvae import DiscreteVAE, GumbelSample, sample_gumbel_tokens
from implicit_slots.models.slate.model import (
    AutoregressiveReconstruction,
    Slate,
    SlateOutput,
    attention_overlays,
)
from implicit_slots.models.slate.transformer import DecoderCache, TransformerDecoder

register_model("slate", SlateConfig, build_slate)

__all__ = [
    "AutoregressiveReconstruction",
    "DecoderCache",
    "DiscreteVAE",
    "GumbelSample",
    "Slate",
    "SlateConfig",
    "SlateOutput",
    "TransformerDecoder",
    "attention_overlays",
    "build_slate",
    "sample_gumbel_tokens",
]
