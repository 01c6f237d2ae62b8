"""The figure and files ``implicit-slots segment`` writes for one image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from implicit_slots.models.autoencoder.visualisation import slot_colours

__all__ = ["segmentation_figure", "write_segmentation"]

_GAP = 2  # white pixels between panels
_PANEL_MAX = 256  # panels are shown at most this large on their long side


def _to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def segmentation_figure(image: Tensor, masks: Tensor, reconstruction: Tensor | None) -> Image.Image:
    """One row: input | reconstruction (if any) | segmentation | one panel per slot.

    Each slot panel shows the image where the slot's mask is and white elsewhere; the segmentation panel
    colours each pixel by its slot (the colours of the other figures of the package).

    Args:
        image: (3, H, W) in [0, 1].
        masks: (K, H, W) summing to 1 over K.
        reconstruction: (3, H, W) in [0, 1] or None.
    """
    height, width = image.shape[-2:]
    scale = min(1.0, _PANEL_MAX / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))

    def fit(panel: Tensor) -> Tensor:  # (C, H, W) -> (C, h, w)
        if panel.shape[-2:] == size:
            return panel
        return F.interpolate(panel[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]

    image_small, masks_small = fit(image), fit(masks)
    colours = slot_colours(masks.shape[0]).to(masks.device)  # (K, 3)
    labels = masks_small.argmax(dim=0)  # (h, w)
    segmentation = colours[labels].permute(2, 0, 1)  # (3, h, w)
    panels = [image_small]
    if reconstruction is not None:
        panels.append(fit(reconstruction))
    panels.append(segmentation)
    for mask in masks_small.unbind(dim=0):
        panels.append(image_small * mask + (1.0 - mask))
    gap = torch.ones(3, size[0], _GAP, dtype=image.dtype, device=image.device)
    row = torch.cat([piece for panel in panels for piece in (panel, gap)][:-1], dim=2)
    return Image.fromarray(_to_uint8(row))


def write_segmentation(
    out_dir: Path, stem: str, image: Tensor, masks: Tensor, reconstruction: Tensor | None
) -> list[Path]:
    """Write ``STEM.png`` (figure), ``STEM_masks.npy`` ((K, H, W) float16) and ``STEM_labels.png``
    (the slot index of each pixel, 8-bit grey) into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / f"{stem}.png"
    segmentation_figure(image, masks, reconstruction).save(figure)
    masks_file = out_dir / f"{stem}_masks.npy"
    np.save(masks_file, masks.cpu().numpy().astype(np.float16))
    labels_file = out_dir / f"{stem}_labels.png"
    Image.fromarray(masks.argmax(dim=0).cpu().numpy().astype(np.uint8), mode="L").save(labels_file)
    return [figure, masks_file, labels_file]
