"""Dataset registry: a name -> builder table behind :func:`build_dataset`.

Each source module registers its names on import::

    register_dataset("coco", build_coco, "COCO-2017 folder")   # procedural sets: register_procedural

A builder is ``build(split, image_size, seed, *, root, num_samples, **options) -> ObjectDataset`` (the
signature of :func:`build_dataset` minus ``name``, with ``root`` already a ``Path`` or None).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from implicit_slots.data.dataset import ObjectDataset

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Modules that register datasets when imported.
_DATASET_MODULES = (
    "implicit_slots.data.clevr_lite",
    "implicit_slots.data.sprites",
    "implicit_slots.data.loaders.clevr",
    "implicit_slots.data.loaders.multi_object",
    "implicit_slots.data.loaders.clevr_mirror",
    "implicit_slots.data.loaders.shapestacks",
    "implicit_slots.data.loaders.coco",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about a dataset: its builder, a one-line description, whether it needs a
    folder (``root``)."""

    name: str
    build: Callable[..., ObjectDataset]
    description: str
    needs_root: bool


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str, build: Callable[..., ObjectDataset], description: str, *, needs_root: bool = False
) -> None:
    """Register a dataset builder under ``name``; registering a different builder twice is an error."""
    if name in _REGISTRY and _REGISTRY[name].build is not build:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = DatasetSpec(name, build, description, needs_root)


def _load_all() -> None:
    for module in _DATASET_MODULES:
        importlib.import_module(module)


def available_datasets() -> list[str]:
    """Names of every registered dataset."""
    _load_all()
    return sorted(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look up a dataset; an unknown name raises ``KeyError`` listing the valid ones."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; valid datasets: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_dataset(
    name: str,
    split: str = "train",
    image_size: int = 64,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    num_samples: int | None = None,
    **options: Any,
) -> ObjectDataset:
    """Build a dataset by name.

    Args:
        name: a registered name (see :func:`available_datasets`).
        split: "train", "val" or "test".
        image_size: side length S of the square images returned.
        seed: base seed of procedural datasets (samples are a function of (seed, split, index)).
        root: the folder of a real dataset (folder loaders only).
        num_samples: procedural datasets: the split's size (defaults: train 50,000, val/test 1,000);
            folder datasets: keep at most this many samples (the first ones in the split's order).
        **options: dataset-specific options (see docs/data.md); an unknown option is an error. The option
            ``cache_dir`` (any dataset) reads the samples from an on-disk copy under that folder, writing it
            first when absent (see :mod:`implicit_slots.data.cache`); cached images are 8-bit.

    Returns:
        A map-style dataset whose items are dicts: ``"image"`` float32 (3, S, S) in [0, 1], and where the
        source has them ``"masks"`` float32 (K + 1, S, S) and ``"properties"`` float32 (K, 19).

    Raises:
        KeyError: unknown dataset name (the message lists the valid names).
        ValueError: unknown split or option, bad value.
        FileNotFoundError: a folder dataset without ``root`` or with a missing path (named).
    """
    spec = get_dataset_spec(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if num_samples is not None and num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if spec.needs_root and root is None:
        raise FileNotFoundError(f"dataset {name!r} reads a local folder: pass root=<folder> (--root DIR)")
    root_path = None if root is None else Path(root).expanduser()
    cache_dir = options.pop("cache_dir", None)
    if cache_dir is None:
        return spec.build(split, image_size, seed, root=root_path, num_samples=num_samples, **options)
    return materialise_dataset(
        name, Path(cache_dir), split, image_size, seed, root=root_path, num_samples=num_samples, **options
    )


def materialise_dataset(
    name: str,
    cache_dir: Path,
    split: str = "train",
    image_size: int = 64,
    seed: int = 0,
    *,
    root: Path | None = None,
    num_samples: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ObjectDataset:
    """Open the cache entry of these arguments under ``cache_dir``, writing it first when absent.

    Returns:
        A :class:`~implicit_slots.data.cache.CachedDataset`.
    """
    from implicit_slots.data.cache import CachedDataset, cache_entry_path, write_cache

    arguments = {
        "name": name,
        "split": split,
        "image_size": image_size,
        "seed": seed,
        "root": None if root is None else str(Path(root).resolve()),
        "num_samples": num_samples,
        "options": dict(sorted(options.items())),
    }
    path = cache_entry_path(cache_dir, arguments)
    if (path / "meta.json").is_file():
        return CachedDataset(path)
    spec = get_dataset_spec(name)
    source = spec.build(split, image_size, seed, root=root, num_samples=num_samples, **options)
    return write_cache(source, path, arguments, progress)
