"""The slot-attention autoencoder for unsupervised object discovery (Locatello et al. 2020).

Image -> CNN encoder with soft position embedding -> slot attention (any variant of Chang et al.'s
Table 2, any number of iterations) -> every slot decoded on its own by a spatial broadcast decoder to
RGB + an alpha logit -> alpha softmax over slots gives the masks -> reconstruction = Σ_k mask_k · rgb_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional

from implicit_slots.models.autoencoder.modules import ConvEncoder, SpatialBroadcastDecoder
from implicit_slots.models.autoencoder.visualisation import (
    horizontal_strip,
    mask_images,
    masked_slot_images,
    paint_segmentation,
    resize_attention,
)
from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.slot_attention import (
    SlotAttention,
    SlotAttentionConfig,
    build_slot_attention,
    check_positive_integers,
)


@dataclass
class AutoencoderConfig:
    """The ``model:`` section of ``name: autoencoder`` (defaults: Locatello et al.'s CLEVR6 model).

    Attributes:
        image_size: side S of the square input images (must equal ``data.image_size``).
        encoder_channels: channels of the four 5x5 encoder convolutions and of the slot-attention inputs.
        encoder_kernel_size: kernel size of the encoder convolutions.
        num_encoder_layers: number of encoder convolutions (all stride 1).
        decoder_channels: channels of the decoder's hidden transposed convolutions.
        decoder_initial_size: side of the grid each slot is broadcast onto; ``image_size`` must be this
            times a power of two (Locatello: 8 for 128x128 CLEVR, i.e. four stride-2 layers; the image size
            itself for Multi-dSprites / Tetrominoes, i.e. no upsampling).
        decoder_hidden_layers: stride-1 hidden layers after the upsampling ones (Locatello CLEVR: 1).
        decoder_kernel_size: kernel size of the decoder's hidden layers (Locatello: 5).
        slot_attention: the slot-attention module (slots, size, iterations, variant, solvers).
    """

    image_size: int = 128
    encoder_channels: int = 64
    encoder_kernel_size: int = 5
    num_encoder_layers: int = 4
    decoder_channels: int = 64
    decoder_initial_size: int = 8
    decoder_hidden_layers: int = 1
    decoder_kernel_size: int = 5
    slot_attention: SlotAttentionConfig = field(default_factory=SlotAttentionConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``model.`` key of a value out of range (``load_config`` calls
        this; the builder checks that ``image_size`` is ``decoder_initial_size`` times a power of two)."""
        check_positive_integers(
            self,
            (
                "image_size",
                "encoder_channels",
                "encoder_kernel_size",
                "num_encoder_layers",
                "decoder_channels",
                "decoder_initial_size",
                "decoder_kernel_size",
            ),
        )
        if not isinstance(self.decoder_hidden_layers, int) or self.decoder_hidden_layers < 0:
            raise ValueError(f"model.decoder_hidden_layers must be >= 0, got {self.decoder_hidden_layers!r}")
        self.slot_attention.validate("model.slot_attention")


@dataclass
class AutoencoderOutput(ModelOutput):
    """What :class:`SlotAttentionAutoencoder` returns.

    Attributes:
        slot_attention: slot-attention output (slots (B, K, D), attention (B, N, K), statistics).
        reconstruction: (B, 3, H, W) reconstructed image, on the [0, 1] scale of the input (unclamped).
        slot_reconstructions: (B, K, 3, H, W) each slot's decoded RGB, same scale.
        masks: (B, K, H, W) alpha masks, softmax over slots (sum to 1 over K at every pixel).
    """

    reconstruction: Tensor
    slot_reconstructions: Tensor
    masks: Tensor


class SlotAttentionAutoencoder(ObjectCentricModel):
    """Slot-attention autoencoder with a spatial broadcast decoder.

    Images enter in [0, 1] and are mapped to [-1, 1] inside (Locatello's range); the decoder works in
    [-1, 1] and the outputs are mapped back to [0, 1].

    Args:
        slot_attention: the slot-attention module; its ``input_dim`` must equal ``encoder_channels``.
        slot_dim: D, the slot size of ``slot_attention``.
        image_size: side S of the square images.
        encoder_channels: encoder width.
        encoder_kernel_size: encoder kernel size.
        num_encoder_layers: number of stride-1 encoder convolutions.
        decoder_channels: decoder width.
        decoder_initial_size: broadcast grid side; S / decoder_initial_size must be a power of two.
        decoder_hidden_layers: stride-1 hidden decoder layers.
        decoder_kernel_size: kernel size of the hidden decoder layers.
    """

    def __init__(
        self,
        slot_attention: SlotAttention,
        slot_dim: int,
        image_size: int,
        encoder_channels: int,
        encoder_kernel_size: int,
        num_encoder_layers: int,
        decoder_channels: int,
        decoder_initial_size: int,
        decoder_hidden_layers: int = 1,
        decoder_kernel_size: int = 5,
    ) -> None:
        super().__init__()
        ratio = image_size / decoder_initial_size
        num_upsampling = round(math.log2(ratio)) if ratio >= 1 else -1
        if num_upsampling < 0 or decoder_initial_size * 2**num_upsampling != image_size:
            raise ValueError(
                f"autoencoder: image_size ({image_size}) must be decoder_initial_size "
                f"({decoder_initial_size}) "
                "times a power of two"
            )
        self.image_size = image_size
        self.encoder = ConvEncoder(encoder_channels, encoder_kernel_size, (1,) * num_encoder_layers)
        self.slot_attention = slot_attention
        self.decoder = SpatialBroadcastDecoder(
            slot_dim,
            decoder_channels,
            decoder_initial_size,
            num_upsampling,
            num_hidden_layers=decoder_hidden_layers,
            kernel_size=decoder_kernel_size,
        )

    def forward(self, batch: Batch) -> AutoencoderOutput:
        """Encode, group into slots, decode.

        Args:
            batch: ``batch["image"]`` float (B, 3, S, S) in [0, 1].

        Returns:
            :class:`AutoencoderOutput`.
        """
        images = batch["image"]
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[2:] != (self.image_size, self.image_size)
        ):
            raise ValueError(
                f"autoencoder expects batch['image'] of shape (B, 3, {self.image_size}, {self.image_size}) "
                f"(model.image_size); got {tuple(images.shape)}"
            )
        inputs = self.encoder(images * 2 - 1)  # (B, N, C)
        slot_output = self.slot_attention(inputs)
        decoded = self.decoder(slot_output.slots)  # (B, K, 4, S, S)
        rgb, alpha_logits = decoded[:, :, :3], decoded[:, :, 3]  # (B, K, 3, S, S), (B, K, S, S)
        masks = torch.softmax(alpha_logits, dim=1)  # (B, K, S, S)
        reconstruction = (masks.unsqueeze(2) * rgb).sum(dim=1)  # (B, 3, S, S) in [-1, 1] units
        return AutoencoderOutput(
            slot_attention=slot_output,
            reconstruction=(reconstruction + 1) / 2,
            slot_reconstructions=(rgb + 1) / 2,
            masks=masks,
        )

    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        """Mean squared error over pixels and channels on the [-1, 1] scale (Locatello's ``l2_loss``).

        Also logs ``per_image_squared_error``: the per-image sum on the [0, 1] scale (SLATE's MSE).
        """
        if not isinstance(output, AutoencoderOutput):
            raise TypeError(
                f"autoencoder.compute_loss expects an AutoencoderOutput, got {type(output).__name__}"
            )
        images = batch["image"]
        # On the [-1, 1] scale every difference is twice the [0, 1] one.
        mse = functional.mse_loss(2 * output.reconstruction, 2 * images)
        per_image = (output.reconstruction - images).pow(2).sum(dim=(1, 2, 3)).mean()
        return LossOutput(
            loss=mse, terms={"mse": mse.detach(), "per_image_squared_error": per_image.detach()}
        )

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Strips per sample: input | reconstruction | segmentation | each slot (masked), and the masks.

        Returns:
            ``"reconstruction"``: (B, 3, S, (3 + K) panels); ``"masks"``: (B, 3, S, K panels) alpha
            masks; ``"attention"``: (B, 3, S, K panels) slot-attention weights upsampled to the image.
        """
        if not isinstance(output, AutoencoderOutput):
            raise TypeError(
                f"autoencoder.visualise expects an AutoencoderOutput, got {type(output).__name__}"
            )
        images = batch["image"]
        size = images.shape[-1]
        attention = resize_attention(output.slot_attention.attention, size, size)  # (B, K, S, S)
        return {
            "reconstruction": horizontal_strip(
                [
                    images,
                    output.reconstruction,
                    paint_segmentation(output.masks),
                    *masked_slot_images(output.slot_reconstructions, output.masks),
                ]
            ),
            "masks": horizontal_strip(mask_images(output.masks)),
            "attention": horizontal_strip(mask_images(attention)),
        }


def build_autoencoder(config: AutoencoderConfig) -> SlotAttentionAutoencoder:
    """Build the autoencoder from its config (the only place config becomes objects)."""
    return SlotAttentionAutoencoder(
        slot_attention=build_slot_attention(config.encoder_channels, config.slot_attention),
        slot_dim=config.slot_attention.slot_dim,
        image_size=config.image_size,
        encoder_channels=config.encoder_channels,
        encoder_kernel_size=config.encoder_kernel_size,
        num_encoder_layers=config.num_encoder_layers,
        decoder_channels=config.decoder_channels,
        decoder_initial_size=config.decoder_initial_size,
        decoder_hidden_layers=config.decoder_hidden_layers,
        decoder_kernel_size=config.decoder_kernel_size,
    )
