"""Apply a trained model to images of any size: per-slot masks at the input resolution, slots, and a
reconstruction where the model has one.

How each model segments (the masks always sum to 1 over slots at every pixel):

- SLATE: the slot-attention weights over the dVAE's token grid (each token covers a 4x4 patch); the
  reconstruction is the one *through the slots*: tokens re-generated greedily from the slots and decoded.
- slot-attention autoencoder: the decoder's alpha masks (softmax over slots) and its reconstruction.
- set prediction: the slot-attention weights over the encoder's feature grid; no reconstruction.

Images are resized to the model's input size (bilinear, antialiased) and the masks resized back to the
input size (nearest for grid attention, bilinear for the autoencoder's pixel masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from implicit_slots.config import ExperimentConfig
from implicit_slots.models.autoencoder import SlotAttentionAutoencoder
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.models.set_prediction import SetPredictionModel
from implicit_slots.models.slate import Slate

__all__ = ["PretrainedModel", "Segmentation"]


@dataclass
class Segmentation:
    """What :meth:`PretrainedModel.segment` returns for a batch of B images of size H x W.

    Attributes:
        masks: (B, K, H, W) float in [0, 1], summing to 1 over the K slots at every pixel.
        slots: (B, K, D) the slot vectors.
        reconstruction: (B, 3, H, W) in [0, 1], or None for models that do not reconstruct.
        model_size: the square size S the images were resized to for the model.
    """

    masks: Tensor
    slots: Tensor
    reconstruction: Tensor | None
    model_size: int

    @property
    def labels(self) -> Tensor:
        """(B, H, W) long: the slot with the largest mask at each pixel."""
        return self.masks.argmax(dim=1)


def _resize(images: Tensor, height: int, width: int, mode: str) -> Tensor:
    if images.shape[-2:] == (height, width):
        return images
    if mode == "nearest":
        return F.interpolate(images, size=(height, width), mode="nearest")
    return F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=True)


def _grid_masks(attention: Tensor) -> Tensor:
    """(B, N, K) attention on a square grid -> (B, K, h, h)."""
    batch, num_inputs, num_slots = attention.shape
    side = round(num_inputs**0.5)
    if side * side != num_inputs:
        raise ValueError(f"attention over {num_inputs} inputs does not come from a square grid")
    return attention.transpose(1, 2).reshape(batch, num_slots, side, side)


class PretrainedModel(nn.Module):
    """A trained model in eval mode, with :meth:`segment` for images of any size.

    Attributes:
        model: the underlying :class:`ObjectCentricModel` (SLATE, autoencoder or set prediction).
        config: the resolved config it was trained with.
        step: the training step of its parameters.
        name: the shipped model's name, or the path it was loaded from.
    """

    def __init__(self, model: ObjectCentricModel, config: ExperimentConfig, step: int, name: str) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.step = step
        self.name = name
        self.eval()

    @property
    def image_size(self) -> int:
        """The square image size S the model was trained at (``data.image_size`` of its config)."""
        return int(self.config.data.image_size)

    def forward(self, batch: dict[str, Tensor]) -> object:
        """The underlying model's forward (``batch["image"]``: (B, 3, S, S) in [0, 1])."""
        return self.model(batch)

    @torch.no_grad()
    def segment(self, images: Tensor, *, reconstruct: bool = True, seed: int = 0) -> Segmentation:
        """Segment images into slots.

        Args:
            images: (B, 3, H, W) or (3, H, W), float in [0, 1] or uint8 in [0, 255]; any H, W.
            reconstruct: also return the model's reconstruction (SLATE: greedy generation through the
                slots, the slow part; ignored by set prediction, which has none).
            seed: seed of the initial slots (slot attention starts from random slots), so repeated
                calls give the same masks.

        Returns:
            :class:`Segmentation` with masks and reconstruction at H x W.

        Raises:
            ValueError: not 3 channels, or not 3 / 4 dimensions.
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"segment expects images (B, 3, H, W) or (3, H, W); got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        device = next(self.model.parameters()).device
        images = images.to(device=device, dtype=torch.float32)
        height, width = images.shape[-2:]
        size = self.image_size
        inputs = _resize(images, size, size, "bilinear").clamp(0.0, 1.0)  # (B, 3, S, S)
        generator = torch.Generator(device=device).manual_seed(seed)
        masks, slots, reconstruction = self._segment_model_size(inputs, reconstruct, generator, seed)
        mode = "bilinear" if isinstance(self.model, SlotAttentionAutoencoder) else "nearest"
        masks = _resize(masks, height, width, mode)
        masks = masks / masks.sum(dim=1, keepdim=True).clamp_min(1e-12)
        if reconstruction is not None:
            reconstruction = _resize(reconstruction, height, width, "bilinear").clamp(0.0, 1.0)
        return Segmentation(masks=masks, slots=slots, reconstruction=reconstruction, model_size=size)

    def _segment_model_size(
        self, inputs: Tensor, reconstruct: bool, generator: torch.Generator, seed: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(masks at the model's grid or pixel resolution (B, K, h, w), slots (B, K, D), reconstruction)."""
        model = self.model
        if isinstance(model, Slate):
            tokens = model.encode_image_tokens(inputs)  # (B, T)
            slot_output = model.encode_slots(model.embed_tokens(tokens)[:, 1:], generator)
            image = None
            if reconstruct:
                generated = model.generate_tokens(slot_output.slots, use_cache=True)
                image = model.decode_image_tokens(generated)
            return _grid_masks(slot_output.attention), slot_output.slots, image
        with torch.random.fork_rng(devices=[]):
            # The autoencoder and set prediction draw their initial slots from the global generator.
            torch.manual_seed(
                int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            )
            output = model({"image": inputs})
        if isinstance(model, SlotAttentionAutoencoder):
            image = output.reconstruction.clamp(0.0, 1.0) if reconstruct else None
            return output.masks, output.slot_attention.slots, image
        if isinstance(model, SetPredictionModel):
            return _grid_masks(output.slot_attention.attention), output.slot_attention.slots, None
        raise TypeError(f"segment does not know how to segment with a {type(model).__name__}")
