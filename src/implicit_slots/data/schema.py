"""The one sample schema shared by every data source, and CLEVR's attribute vocabulary.

A sample is a ``dict[str, Tensor]``:

- ``"image"``: float32 ``(3, H, W)`` in [0, 1].
- ``"masks"`` (sources with masks only): float32 ``(K + 1, H, W)``, channel 0 the background, channel
  ``k + 1`` object ``k``; one-hot per pixel (sums to 1 everywhere). Channels of absent objects are all
  zero, so every sample of a dataset has the same ``K + 1`` channels and batches collate.
- ``"properties"`` (sources with CLEVR attributes only): float32 ``(K, 19)`` in Locatello et al.'s
  layout (see :data:`PROPERTY_SLICES`); row ``k`` describes the object of mask channel ``k + 1``; rows of
  absent objects are all zero, real-object flag included.

Keys a source cannot provide are absent, never zero-filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The project's fixed vocabulary order (CLEVR's scene-JSON names). One-hot columns follow these tuples.
SIZES: tuple[str, ...] = ("small", "large")
MATERIALS: tuple[str, ...] = ("rubber", "metal")
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
COLORS: tuple[str, ...] = ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan")

# CLEVR's colour values (clevr-dataset-gen data/properties.json), 0-255.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "blue": (42, 75, 215),
    "brown": (129, 74, 25),
    "yellow": (255, 238, 51),
    "red": (173, 35, 35),
    "green": (29, 105, 20),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
}

NUM_PROPERTIES = 19
# Column ranges of the property vector: coordinates are (c + 3) / 6 of CLEVR's 3d_coords (x, y, z).
PROPERTY_SLICES: dict[str, slice] = {
    "coords": slice(0, 3),
    "size": slice(3, 5),
    "material": slice(5, 7),
    "shape": slice(7, 10),
    "color": slice(10, 18),
    "real": slice(18, 19),
}


class SceneSchemaError(ValueError):
    """A scene description (CLEVR scene JSON object) is missing a key or has an unknown value."""


def _index(vocabulary: tuple[str, ...], value: Any, key: str, where: str) -> int:
    if value not in vocabulary:
        raise SceneSchemaError(f"{where}: {key}={value!r} is not one of {list(vocabulary)}")
    return vocabulary.index(value)


def properties_from_objects(
    objects: Sequence[Mapping[str, Any]], num_objects_max: int, *, where: str = "scene"
) -> np.ndarray:
    """Locatello's property matrix from objects in CLEVR's scene-JSON schema.

    Args:
        objects: each with ``3d_coords`` ``[x, y, z]``, ``size``, ``material``, ``shape``, ``color``.
        num_objects_max: K, the number of rows (zero rows pad the absent objects).
        where: names the source (file, scene index) in error messages; they add the object index.

    Returns:
        float32 ``(K, 19)``: ``(x+3)/6, (y+3)/6, (z+3)/6``, size (2), material (2), shape (3), colour (8)
        one-hots in the order of :data:`SIZES` ... :data:`COLORS`, then the real-object flag 1.

    Raises:
        SceneSchemaError: too many objects, a missing key or an unknown attribute value.
    """
    if len(objects) > num_objects_max:
        raise SceneSchemaError(
            f"{where}: {len(objects)} objects, more than num_objects_max={num_objects_max}"
        )
    properties = np.zeros((num_objects_max, NUM_PROPERTIES), np.float32)  # (K, 19)
    for row, obj in enumerate(objects):
        at = f"{where}: object {row}"
        try:
            coords = [float(c) for c in obj["3d_coords"]]
            size, material, shape, color = obj["size"], obj["material"], obj["shape"], obj["color"]
        except (KeyError, TypeError, ValueError) as error:
            raise SceneSchemaError(f"{at} lacks a CLEVR attribute or has a bad one ({error!r})") from None
        if len(coords) != 3:
            raise SceneSchemaError(f"{at}: 3d_coords has {len(coords)} values, expected 3")
        properties[row, 0:3] = [(c + 3.0) / 6.0 for c in coords]
        properties[row, 3 + _index(SIZES, size, "size", at)] = 1.0
        properties[row, 5 + _index(MATERIALS, material, "material", at)] = 1.0
        properties[row, 7 + _index(SHAPES, shape, "shape", at)] = 1.0
        properties[row, 10 + _index(COLORS, color, "color", at)] = 1.0
        properties[row, 18] = 1.0
    return properties


def masks_from_labels(labels: np.ndarray, num_objects_max: int) -> np.ndarray:
    """One-hot masks from an integer label map.

    Args:
        labels: integer ``(H, W)``; 0 is the background, ``k + 1`` object ``k``.
        num_objects_max: K; labels must be in ``[0, K]``.

    Returns:
        float32 ``(K + 1, H, W)``, one-hot along the first axis.
    """
    if labels.size and int(labels.max()) > num_objects_max:
        raise ValueError(f"label {int(labels.max())} exceeds num_objects_max={num_objects_max}")
    channels = np.arange(num_objects_max + 1, dtype=labels.dtype)[:, None, None]  # (K+1, 1, 1)
    return (labels[None] == channels).astype(np.float32)  # (K+1, H, W)
