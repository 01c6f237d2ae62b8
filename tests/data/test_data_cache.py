"""The dataset cache: a failed write leaves nothing to reuse; a damaged entry is named, not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import Tensor

from implicit_slots.data import build_dataset
from implicit_slots.data.cache import write_cache
from implicit_slots.data.registry import ObjectDataset


class _FailingDataset(ObjectDataset):
    """Two good samples, then a read error (a damaged source file found half-way)."""

    num_objects_max, has_masks, has_properties, image_size = 3, False, False, 8

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if index == 2:
            raise OSError("sample 2: unreadable")
        return build_dataset("sprites", image_size=8, num_samples=4, max_objects=3)[index]


def test_a_failed_write_leaves_no_entry_and_no_temporary_folder(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="sample 2"):
        write_cache(_FailingDataset(), tmp_path / "entry", {"name": "failing"})
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_entry_names_the_file(tmp_path: Path) -> None:
    options = {"image_size": 8, "num_samples": 3, "cache_dir": tmp_path}
    build_dataset("sprites", **options)
    (entry,) = tmp_path.iterdir()
    np.save(entry / "labels.npy", np.zeros((2, 8, 8), np.uint8))  # one sample short
    with pytest.raises(ValueError, match=r"labels\.npy: shape \(2, 8, 8\), meta\.json implies \(3, 8, 8\)"):
        build_dataset("sprites", **options)
