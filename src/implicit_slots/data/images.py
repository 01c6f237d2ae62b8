"""Reading images from disk safely, and the crop and resize presets of the reference code.

Image modes are normalised to 8-bit RGB: RGBA/LA drop alpha (CLEVR's PNGs are RGBA), grayscale and palette
images are replicated/expanded to RGB, 16-bit grayscale is scaled by 255/65535. A corrupt, truncated or
unreadable file raises :class:`ImageReadError` naming it.

Crop presets (applied before resizing):

- ``"none"``: the whole image (SLATE's loaders and Locatello's set prediction resize it to S x S).
- ``"center"``: the largest centred square.
- ``"locatello"``: rows 29:221, columns 64:256, literally (Locatello et al.'s object-discovery crop for
  240x320 CLEVR-with-masks; their code applies the same numbers to 320x480 CLEVR v1.0).
- ``"locatello-scaled"``: the same box scaled to the image size (rows 29/240..221/240, cols 64/320..256/320).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CROPS: tuple[str, ...] = ("none", "center", "locatello", "locatello-scaled")
RESAMPLE: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class ImageReadError(ValueError):
    """An image file that cannot be used: corrupt, truncated or of an unsupported kind."""


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, 3)``.

    Raises:
        ImageReadError: the file is corrupt/truncated or its mode is unsupported (the message names it).
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(image, np.int64)
                if values.min() < 0 or values.max() > 65535:
                    raise ImageReadError(f"{path}: 32-bit integer image with values outside 0..65535")
                gray = np.round(values * (255.0 / 65535.0)).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if mode == "F":
                raise ImageReadError(f"{path}: floating-point image mode 'F' is not supported")
            rgb = image if mode == "RGB" else image.convert("RGB")  # RGBA/LA: alpha dropped; L/P/1: expanded
            return np.asarray(rgb, np.uint8).copy()
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot read image ({error})") from None


def read_label_image(path: Path) -> np.ndarray:
    """Read an image file holding labels: uint8/int ``(H, W)`` from its first channel (or only channel)."""
    try:
        with Image.open(path) as image:
            image.load()
            values = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot read label image ({error})") from None
    return values[..., 0] if values.ndim == 3 else values


def crop_box(preset: str, height: int, width: int, *, where: str = "image") -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a crop preset (see the module docstring) for an image size."""
    if preset == "none":
        return 0, height, 0, width
    if preset == "center":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return top, top + side, left, left + side
    if preset == "locatello":
        if height < 221 or width < 256:
            raise ValueError(
                f"{where}: crop 'locatello' (rows 29:221, cols 64:256) needs at least 221x256 pixels"
            )
        return 29, 221, 64, 256
    if preset == "locatello-scaled":
        return (
            round(29 / 240 * height),
            round(221 / 240 * height),
            round(64 / 320 * width),
            round(256 / 320 * width),
        )
    raise ValueError(f"unknown crop {preset!r}; valid crops: {list(CROPS)}")


def crop_and_resize(
    image: np.ndarray, crop: str, size: int, resample: str, *, where: str = "image"
) -> np.ndarray:
    """Crop uint8 ``(H, W, C)`` by preset and resize to ``(size, size)``; float32 ``(C, S, S)`` in [0, 1]."""
    top, bottom, left, right = crop_box(crop, image.shape[0], image.shape[1], where=where)
    image = image[top:bottom, left:right]
    if image.shape[0] != size or image.shape[1] != size:
        if image.shape[2] == 1:
            image = np.asarray(Image.fromarray(image[..., 0]).resize((size, size), RESAMPLE[resample]))[
                ..., None
            ]
        else:
            image = np.asarray(Image.fromarray(image).resize((size, size), RESAMPLE[resample]))
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def crop_and_resize_labels(labels: np.ndarray, crop: str, size: int, *, where: str = "labels") -> np.ndarray:
    """Crop an integer ``(H, W)`` label map by preset and resize it to ``(size, size)`` (nearest)."""
    top, bottom, left, right = crop_box(crop, labels.shape[0], labels.shape[1], where=where)
    labels = np.ascontiguousarray(labels[top:bottom, left:right])
    if labels.shape != (size, size):
        rows = ((np.arange(size) + 0.5) * labels.shape[0] / size).astype(np.int64)
        cols = ((np.arange(size) + 0.5) * labels.shape[1] / size).astype(np.int64)
        labels = labels[rows[:, None], cols[None, :]]
    return labels
