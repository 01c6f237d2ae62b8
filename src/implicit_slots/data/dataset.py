"""The base class of every dataset (its own module, so that the registry and the cache both build on it
without importing each other)."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ObjectDataset"]


class ObjectDataset(Dataset[dict[str, Tensor]]):
    """Base class of every dataset returned by :func:`build_dataset`.

    Attributes:
        num_objects_max: K, the number of object rows/mask channels (``masks`` has K + 1 channels).
        has_masks: samples carry ``"masks"``.
        has_properties: samples carry ``"properties"``.
        image_size: side length of the (square) images.
    """

    num_objects_max: int = 0
    has_masks: bool = False
    has_properties: bool = False
    image_size: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        raise NotImplementedError
