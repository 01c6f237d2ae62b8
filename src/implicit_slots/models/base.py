"""The contract between models and the training engine.

Every trainable model (SLATE, the slot-attention autoencoder, set prediction) subclasses
:class:`ObjectCentricModel`. The engine only ever:

1. calls ``model(batch)`` (through DDP when distributed) and gets a :class:`ModelOutput` subclass,
2. calls ``model.compute_loss(output, batch)`` and back-propagates ``LossOutput.loss``,
3. builds the optimizer from ``model.parameter_groups()`` (names match ``training.optimizer.groups``),
4. sets scheduled hyperparameters (e.g. the Gumbel temperature) with ``model.set_hyperparameters``,
5. reads ``output.slot_attention`` for fixed-point diagnostics and ``model.visualise`` for images.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from implicit_slots.slot_attention import SlotAttention, SlotAttentionOutput

Batch = Mapping[str, Tensor]


@dataclass
class ModelOutput:
    """Base class of every model's forward output.

    Attributes:
        slot_attention: the slot-attention module's output (slots, attention, fixed-point statistics).
    """

    slot_attention: SlotAttentionOutput


@dataclass
class LossOutput:
    """A scalar loss to minimise plus the named terms to log.

    Attributes:
        loss: scalar tensor with gradient; the sum of the weighted terms.
        terms: detached scalar tensors, e.g. ``{"mse": ..., "cross_entropy": ...}``.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class ObjectCentricModel(nn.Module, abc.ABC):
    """Base class: a model built around one :class:`SlotAttention` module."""

    slot_attention: SlotAttention

    @abc.abstractmethod
    def forward(self, batch: Batch) -> ModelOutput:
        """Run the model on a batch (``batch["image"]``: float32 (B, 3, H, W) in [0, 1])."""

    @abc.abstractmethod
    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        """The training loss of ``output`` on ``batch``."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters, each with its own learning rate in the config."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def hyperparameter_names(self) -> tuple[str, ...]:
        """Names accepted by :meth:`set_hyperparameters` (scheduled by the engine)."""
        return ()

    def set_hyperparameters(self, values: Mapping[str, float]) -> None:
        """Set scheduled hyperparameters; unknown names are an error."""
        unknown = set(values) - set(self.hyperparameter_names())
        if unknown:
            raise KeyError(
                f"{type(self).__name__} has no scheduled hyperparameter(s) {sorted(unknown)}; "
                f"valid: {list(self.hyperparameter_names())}"
            )
        for name, value in values.items():
            setattr(self, name, float(value))

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Images to log, name -> float (N, 3, H, W) in [0, 1]. Default: none."""
        return {}
