"""Slot attention: the update cell, the learned initialisation, and the fixed-point module."""

from implicit_slots.slot_attention.cell import CellOutput, SlotAttentionCell
from implicit_slots.slot_attention.config import (
    SlotAttentionConfig,
    build_slot_attention,
    check_positive_integers,
)
from implicit_slots.slot_attention.module import (
    SLOT_INITIALIZATIONS,
    GaussianSlotInitializer,
    LearnedQueryInitializer,
    SlotAttention,
    SlotAttentionOutput,
    set_residual_recording,
)

__all__ = [
    "SLOT_INITIALIZATIONS",
    "CellOutput",
    "GaussianSlotInitializer",
    "LearnedQueryInitializer",
    "SlotAttention",
    "SlotAttentionCell",
    "SlotAttentionConfig",
    "SlotAttentionOutput",
    "build_slot_attention",
    "check_positive_integers",
    "set_residual_recording",
]
