"""An on-disk copy of any dataset: rendered (or decoded) once, then memory-mapped.

Layout of one cache entry, a folder ``<cache_dir>/<name>-<split>-<size>px-<key>/``:

- ``meta.json``: the arguments that define the entry (name, split, image_size, seed, root, num_samples,
  options), ``num_objects_max``, ``has_masks``, ``has_properties``, ``count``.
- ``images.npy``: uint8 ``(N, 3, S, S)`` (the float image times 255, rounded).
- ``labels.npy``: uint8 ``(N, S, S)``, the argmax of the one-hot masks (sources with masks).
- ``properties.npy``: float32 ``(N, K, 19)`` (sources with properties).

An entry is written into a temporary folder beside it and renamed into place, so readers never see a
half-written entry; when two processes race, the first rename wins and the other copy is discarded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from implicit_slots.data.dataset import ObjectDataset
from implicit_slots.data.schema import masks_from_labels

CACHE_FORMAT_VERSION = 1


def _plain(value: Any) -> Any:
    """Mappings -> dicts, non-string sequences -> lists (so a tuple, a list and an OmegaConf ListConfig
    of the same items give the same key)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def cache_key(arguments: Mapping[str, Any]) -> str:
    """A short stable hash of the JSON-serialisable ``arguments`` (the keys are sorted)."""
    plain = _plain({"format": CACHE_FORMAT_VERSION, **arguments})
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_entry_path(cache_dir: Path, arguments: Mapping[str, Any]) -> Path:
    """The folder of the entry defined by ``arguments`` (name, split, image_size, ...)."""
    name = f"{arguments['name']}-{arguments['split']}-{arguments['image_size']}px-{cache_key(arguments)}"
    return Path(cache_dir) / name


class CachedDataset(ObjectDataset):
    """A dataset read from a cache entry (see the module docstring for the layout).

    Args:
        path: the entry's folder.
    """

    def __init__(self, path: Path) -> None:
        meta_path = Path(path) / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"not a dataset cache entry (no meta.json): {path}")
        self.path = Path(path)
        self.meta = json.loads(meta_path.read_text())
        self.num_objects_max = int(self.meta["num_objects_max"])
        self.has_masks = bool(self.meta["has_masks"])
        self.has_properties = bool(self.meta["has_properties"])
        self.image_size = int(self.meta["image_size"])
        self.count = int(self.meta["count"])
        self.images = np.load(self.path / "images.npy", mmap_mode="r")  # (N, 3, S, S) uint8
        self.labels = np.load(self.path / "labels.npy", mmap_mode="r") if self.has_masks else None
        self.properties = (
            np.load(self.path / "properties.npy", mmap_mode="r") if self.has_properties else None
        )
        size, k = self.image_size, self.num_objects_max
        for name, array, shape in (
            ("images.npy", self.images, (self.count, 3, size, size)),
            ("labels.npy", self.labels, (self.count, size, size)),
            ("properties.npy", self.properties, (self.count, k, 19)),
        ):
            if array is not None and array.shape != shape:
                raise ValueError(
                    f"{self.path / name}: shape {array.shape}, meta.json implies {shape}; "
                    f"delete {self.path} to write the cache entry again"
                )

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of range for cached dataset of size {self.count}")
        image = np.asarray(self.images[index], np.float32) / 255.0  # (3, S, S)
        item = {"image": torch.from_numpy(image)}
        if self.labels is not None:
            labels = np.asarray(self.labels[index])
            item["masks"] = torch.from_numpy(masks_from_labels(labels, self.num_objects_max))
        if self.properties is not None:
            item["properties"] = torch.from_numpy(np.array(self.properties[index], np.float32))
        return item


def write_cache(
    dataset: ObjectDataset,
    path: Path,
    arguments: Mapping[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> CachedDataset:
    """Write every sample of ``dataset`` into the cache entry ``path`` atomically and open it.

    Args:
        dataset: any :class:`ObjectDataset` (masks must be one-hot).
        path: the entry folder to create; if it appears meanwhile (another process), that copy is used.
        arguments: what defines the entry (stored in meta.json).
        progress: called as ``progress(done, total)`` after each sample.
    """
    path = Path(path)
    count = len(dataset)
    if count == 0:
        raise ValueError(f"nothing to cache: the dataset for {path.name} is empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    size = dataset.image_size
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        images = np.lib.format.open_memmap(temporary / "images.npy", "w+", np.uint8, (count, 3, size, size))
        labels = (
            np.lib.format.open_memmap(temporary / "labels.npy", "w+", np.uint8, (count, size, size))
            if dataset.has_masks
            else None
        )
        properties = (
            np.lib.format.open_memmap(
                temporary / "properties.npy", "w+", np.float32, (count, dataset.num_objects_max, 19)
            )
            if dataset.has_properties
            else None
        )
        for index in range(count):
            sample = dataset[index]
            images[index] = np.round(sample["image"].numpy() * 255.0).astype(np.uint8)
            if labels is not None:
                masks = sample["masks"].numpy()  # (K+1, S, S)
                if not np.array_equal(masks.sum(axis=0), np.ones(masks.shape[1:], masks.dtype)):
                    raise ValueError(
                        f"sample {index}: masks are not one-hot; they cannot be cached as labels"
                    )
                labels[index] = masks.argmax(axis=0)
            if properties is not None:
                properties[index] = sample["properties"].numpy()
            if progress is not None:
                progress(index + 1, count)
        for array in (images, labels, properties):
            if array is not None:
                array.flush()
        del images, labels, properties
        meta = {
            **arguments,
            "num_objects_max": dataset.num_objects_max,
            "has_masks": dataset.has_masks,
            "has_properties": dataset.has_properties,
            "count": count,
            "format": CACHE_FORMAT_VERSION,
        }
        (temporary / "meta.json").write_text(json.dumps(_plain(meta), indent=2, sort_keys=True, default=str))
        try:
            os.rename(temporary, path)
        except OSError:
            if not (path / "meta.json").is_file():
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return CachedDataset(path)
