"""Image strips for TensorBoard and evaluation figures (torch only, values in [0, 1])."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

# Distinct colours for painting per-slot masks (tab10-like), (10, 3) in [0, 1].
SLOT_COLOURS = torch.tensor(
    [
        [0.12, 0.47, 0.71],
        [1.00, 0.50, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.40, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.50, 0.50, 0.50],
        [0.74, 0.74, 0.13],
        [0.09, 0.75, 0.81],
    ]
)


def slot_colours(num_slots: int) -> Tensor:
    """(K, 3) colours, cycling through :data:`SLOT_COLOURS`."""
    return SLOT_COLOURS[torch.arange(num_slots) % len(SLOT_COLOURS)]


def paint_segmentation(masks: Tensor) -> Tensor:
    """Colour each pixel by the slot with the largest mask value.

    Args:
        masks: (B, K, H, W) soft or hard masks.

    Returns:
        (B, 3, H, W) image in [0, 1].
    """
    colours = slot_colours(masks.shape[1]).to(masks.device)  # (K, 3)
    hard = functional.one_hot(masks.argmax(dim=1), masks.shape[1]).to(colours.dtype)  # (B, H, W, K)
    return (hard @ colours).permute(0, 3, 1, 2)


def resize_attention(attention: Tensor, height: int, width: int) -> Tensor:
    """Slot-attention weights on the encoder grid, as masks at image resolution.

    Args:
        attention: (B, N, K) attention over slots on a square grid of N = h * h positions.
        height: image height H.
        width: image width W.

    Returns:
        (B, K, H, W), nearest-neighbour upsampled.
    """
    batch_size, num_inputs, num_slots = attention.shape
    side = round(num_inputs**0.5)
    if side * side != num_inputs:
        raise ValueError(f"attention over {num_inputs} inputs does not come from a square grid")
    grid = attention.transpose(1, 2).reshape(batch_size, num_slots, side, side)  # (B, K, h, h)
    return functional.interpolate(grid, size=(height, width), mode="nearest")


def horizontal_strip(panels: list[Tensor], gap: int = 2) -> Tensor:
    """Concatenate images side by side with white gaps.

    Args:
        panels: each (B, 3, H, W) in [0, 1].
        gap: pixels of white between panels.

    Returns:
        (B, 3, H, P * W + (P - 1) * gap).
    """
    first = panels[0]
    spacer = torch.ones(first.shape[0], 3, first.shape[2], gap, dtype=first.dtype, device=first.device)
    pieces: list[Tensor] = []
    for index, panel in enumerate(panels):
        if index:
            pieces.append(spacer)
        pieces.append(panel.clamp(0, 1))
    return torch.cat(pieces, dim=3)


def masked_slot_images(slot_images: Tensor, masks: Tensor) -> list[Tensor]:
    """Each slot's image shown where its mask is, on white elsewhere.

    Args:
        slot_images: (B, K, 3, H, W) per-slot RGB in [0, 1].
        masks: (B, K, H, W) in [0, 1].

    Returns:
        K tensors (B, 3, H, W).
    """
    weights = masks.unsqueeze(2)  # (B, K, 1, H, W)
    composed = slot_images.clamp(0, 1) * weights + (1 - weights)  # (B, K, 3, H, W)
    return list(composed.unbind(dim=1))


def mask_images(masks: Tensor) -> list[Tensor]:
    """Each slot's mask as a grey image (white = 1).

    Args:
        masks: (B, K, H, W) in [0, 1].

    Returns:
        K tensors (B, 3, H, W).
    """
    return [mask.unsqueeze(1).expand(-1, 3, -1, -1) for mask in masks.unbind(dim=1)]
