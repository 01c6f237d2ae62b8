"""Shared machinery of the procedural (rendered on the fly) datasets.

Sample ``index`` of split ``split`` is a pure function of ``(seed, split, index)`` and the dataset's
options: its random generator is ``numpy.random.default_rng([seed, SPLIT_IDS[split], index])``. No global
state is read, so results do not depend on access order, worker count or resumption, and the three splits
draw from disjoint seed streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from implicit_slots.data.registry import ObjectDataset, register_dataset
from implicit_slots.data.schema import masks_from_labels

SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_NUM_SAMPLES: dict[str, int] = {"train": 50_000, "val": 1_000, "test": 1_000}


@dataclass
class RenderedSample:
    """One procedural sample in array form.

    Attributes:
        image: float32 (3, S, S) in [0, 1].
        labels: integer (S, S); 0 background, k + 1 object k.
        properties: float32 (K, 19), or None for sources without CLEVR attributes.
        scene: the scene description (JSON-serialisable).
    """

    image: np.ndarray
    labels: np.ndarray
    properties: np.ndarray | None
    scene: dict[str, Any]


def check_options(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``options`` into ``defaults``; an unknown option is a ``ValueError`` listing the valid ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {unknown}; valid options: {sorted(defaults)}")
    return {**defaults, **options}


def check_range(name: str, key: str, value: Any, low: float, high: float) -> None:
    """Raise ``ValueError`` naming the option when ``value`` is not a number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"dataset {name!r}: option {key}={value!r} must be a number in [{low}, {high}]")


class ProceduralDataset(ObjectDataset):
    """A dataset whose samples are rendered from ``(seed, split, index)``.

    Subclasses implement :meth:`render_sample`.

    Args:
        name: registry name (for messages).
        split: "train", "val" or "test".
        image_size: side length S.
        seed: base seed (>= 0).
        num_samples: size of the split (None: 50,000 for train, 1,000 for val and test).
    """

    def __init__(self, name: str, split: str, image_size: int, seed: int, num_samples: int | None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"dataset {name!r}: seed must be an integer >= 0, got {seed!r}")
        self.name = name
        self.split = split
        self.image_size = image_size
        self.seed = seed
        self.num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else int(num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` (independent of every other sample and split)."""
        return np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])

    def render_sample(self, index: int) -> RenderedSample:
        """Render sample ``index`` (no bounds check)."""
        raise NotImplementedError

    def scene(self, index: int) -> dict[str, Any]:
        """The scene description of sample ``index`` (objects in CLEVR's scene-JSON schema where possible)."""
        return self.render_sample(self._check_index(index)).scene

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.name} {self.split} of size {len(self)}")
        return index

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.render_sample(self._check_index(int(index)))
        item = {"image": torch.from_numpy(np.ascontiguousarray(sample.image, np.float32))}  # (3, S, S)
        if self.has_masks:
            item["masks"] = torch.from_numpy(masks_from_labels(sample.labels, self.num_objects_max))
        if self.has_properties and sample.properties is not None:
            item["properties"] = torch.from_numpy(sample.properties)  # (K, 19)
        return item


def register_procedural(
    name: str, dataset_type: type[ProceduralDataset], defaults: Mapping[str, Any], description: str
) -> None:
    """Register a procedural dataset whose builder checks options against ``defaults`` (no root folder)."""

    def build(
        split: str, image_size: int, seed: int, *, root: Any, num_samples: int | None, **options: Any
    ) -> ProceduralDataset:
        del root  # rendered, never read from disk
        merged = check_options(name, options, defaults)
        return dataset_type(name, split, image_size, seed, num_samples, **merged)

    build.__doc__ = f"Builder of ``{name}`` (options and defaults: {dict(defaults)})."
    register_dataset(name, build, description)
