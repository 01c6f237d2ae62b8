"""Set prediction of object properties with slot attention (Locatello et al. 2020, Chang et al. Fig. 7).

Image -> strided CNN encoder with soft position embedding -> slot attention -> per-slot MLP to a
19-dim property vector (3 coordinates, size, material, shape, colour one-hots, real-object flag; all
through a sigmoid) -> Hungarian-matched Huber loss against the padded ground-truth set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from implicit_slots.metrics import hungarian_huber_loss
from implicit_slots.models.autoencoder.modules import ConvEncoder
from implicit_slots.models.autoencoder.visualisation import horizontal_strip, mask_images, resize_attention
from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.slot_attention import (
    SlotAttention,
    SlotAttentionConfig,
    build_slot_attention,
    check_positive_integers,
)


@dataclass
class SetPredictionConfig:
    """The ``model:`` section of ``name: set_prediction`` (defaults: Locatello et al.'s CLEVR model).

    Attributes:
        encoder_channels: channels of the encoder convolutions and of the slot-attention inputs.
        encoder_kernel_size: kernel size of the encoder convolutions.
        encoder_strides: stride of each encoder convolution (Locatello: 1, 2, 2, 1, so 128 -> 32).
        head_hidden_dim: hidden width of the per-slot property MLP.
        property_dim: length of the predicted property vector (19 for CLEVR).
        slot_attention: the slot-attention module (Locatello: 10 slots, 3 iterations).
    """

    encoder_channels: int = 64
    encoder_kernel_size: int = 5
    encoder_strides: list[int] = field(default_factory=lambda: [1, 2, 2, 1])
    head_hidden_dim: int = 64
    property_dim: int = 19
    slot_attention: SlotAttentionConfig = field(default_factory=lambda: SlotAttentionConfig(num_slots=10))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``model.`` key of a value out of range (``load_config`` calls
        this; the encoder checks ``encoder_strides`` when it is built)."""
        check_positive_integers(
            self, ("encoder_channels", "encoder_kernel_size", "head_hidden_dim", "property_dim")
        )
        self.slot_attention.validate("model.slot_attention")


@dataclass
class SetPredictionOutput(ModelOutput):
    """What :class:`SetPredictionModel` returns.

    Attributes:
        slot_attention: slot-attention output (slots (B, K, D), attention (B, N, K), statistics).
        predictions: (B, K, property_dim) per-slot property vectors in [0, 1]; the last entry is the
            confidence that the slot is a real object.
    """

    predictions: Tensor


class SetPredictionModel(ObjectCentricModel):
    """Slot attention followed by a per-slot property classifier.

    Args:
        slot_attention: the slot-attention module; its ``input_dim`` must equal ``encoder_channels``.
        slot_dim: D, the slot size of ``slot_attention``.
        encoder_channels: encoder width.
        encoder_kernel_size: encoder kernel size.
        encoder_strides: stride of each encoder convolution.
        head_hidden_dim: hidden width of the property MLP.
        property_dim: output size per slot.
    """

    def __init__(
        self,
        slot_attention: SlotAttention,
        slot_dim: int,
        encoder_channels: int,
        encoder_kernel_size: int,
        encoder_strides: tuple[int, ...],
        head_hidden_dim: int,
        property_dim: int,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(encoder_channels, encoder_kernel_size, encoder_strides)
        self.slot_attention = slot_attention
        self.head = nn.Sequential(
            nn.Linear(slot_dim, head_hidden_dim), nn.ReLU(), nn.Linear(head_hidden_dim, property_dim)
        )
        self.property_dim = property_dim

    def forward(self, batch: Batch) -> SetPredictionOutput:
        """Predict a set of property vectors.

        Args:
            batch: ``batch["image"]`` float (B, 3, H, W) in [0, 1], H and W divisible by the product of
                the encoder strides.

        Returns:
            :class:`SetPredictionOutput`.
        """
        images = batch["image"]
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % self.encoder.downsampling:
            raise ValueError(
                "set_prediction expects batch['image'] of shape (B, 3, H, W) with H, W divisible by "
                f"{self.encoder.downsampling}; got {tuple(images.shape)}"
            )
        inputs = self.encoder(images * 2 - 1)  # (B, N, C)
        slot_output = self.slot_attention(inputs)
        predictions = torch.sigmoid(self.head(slot_output.slots))  # (B, K, property_dim)
        return SetPredictionOutput(slot_attention=slot_output, predictions=predictions)

    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        """Hungarian-matched Huber loss against ``batch["properties"]`` (B, Kt, property_dim), Kt <= K.

        The targets are padded with "no object" rows (all zeros) to the K slots before the matching
        (:func:`~implicit_slots.metrics.pad_set`, Locatello et al.), so every slot is matched and the slots
        without an object learn confidence 0 instead of getting no loss.
        """
        if not isinstance(output, SetPredictionOutput):
            raise TypeError(
                f"set_prediction.compute_loss expects a SetPredictionOutput, got {type(output).__name__}"
            )
        if "properties" not in batch:
            raise KeyError(
                "set_prediction needs batch['properties'] (B, K, 19); use a dataset with CLEVR properties "
                "(e.g. clevr-lite, clevr)"
            )
        targets = batch["properties"]
        if targets.shape[1] > output.predictions.shape[1]:
            raise ValueError(
                f"set_prediction: {targets.shape[1]} target objects but only "
                f"{output.predictions.shape[1]} slots; "
                "set model.slot_attention.num_slots >= the dataset's maximum number of objects"
            )
        loss = hungarian_huber_loss(output.predictions, targets)
        return LossOutput(loss=loss, terms={"hungarian_huber": loss.detach()})

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Strips per sample: input | slot-attention weights of each slot (upsampled to the image).

        Returns:
            ``"attention"``: (B, 3, H, (1 + K) panels).
        """
        if not isinstance(output, SetPredictionOutput):
            raise TypeError(
                f"set_prediction.visualise expects a SetPredictionOutput, got {type(output).__name__}"
            )
        images = batch["image"]
        attention = resize_attention(output.slot_attention.attention, images.shape[2], images.shape[3])
        return {"attention": horizontal_strip([images, *mask_images(attention)])}


def build_set_prediction(config: SetPredictionConfig) -> SetPredictionModel:
    """Build the set-prediction model from its config (the only place config becomes objects)."""
    return SetPredictionModel(
        slot_attention=build_slot_attention(config.encoder_channels, config.slot_attention),
        slot_dim=config.slot_attention.slot_dim,
        encoder_channels=config.encoder_channels,
        encoder_kernel_size=config.encoder_kernel_size,
        encoder_strides=tuple(config.encoder_strides),
        head_hidden_dim=config.head_hidden_dim,
        property_dim=config.property_dim,
    )
