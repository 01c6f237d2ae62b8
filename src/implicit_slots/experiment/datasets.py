"""Datasets of an experiment: the ``data:`` config section turned into one split's dataset.

Training and evaluation both build their splits through :func:`build_dataset_split` (looked up at call
time, so tests can replace it), or through a ``dataset_factory`` argument with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from implicit_slots.config import DataConfig

__all__ = ["DatasetFactory", "build_dataset_split"]

DatasetFactory = Callable[[DataConfig, str], Dataset]


def build_dataset_split(data: DataConfig, split: str) -> Dataset:
    """The default dataset factory: ``implicit_slots.data.build_dataset`` for one split.

    Tests (and callers with their own data) replace it through ``train(..., dataset_factory=...)`` or by
    monkeypatching this module attribute; the engine looks it up at call time.

    Args:
        data: the ``data:`` config section.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """
    from implicit_slots.data import build_dataset

    options = dict(data.options)
    if data.cache_dir is not None:  # only datasets that cache accept it
        options["cache_dir"] = data.cache_dir
    return build_dataset(
        data.name,
        split=split,
        image_size=data.image_size,
        seed=data.seed,
        root=data.root,
        num_samples=getattr(data.num_samples, split, None),
        **options,
    )
