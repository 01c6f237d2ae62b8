"""The common part of the folder loaders: a sorted list of image files, crop and resize, bad-file policy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from implicit_slots.data.images import CROPS, RESAMPLE, ImageReadError, crop_and_resize, read_rgb
from implicit_slots.data.registry import ObjectDataset

FOLDER_DEFAULTS: dict[str, Any] = {"crop": "none", "resample": "bicubic", "check_files": False}


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def split_sorted(items: Sequence[Any], split: str) -> list[Any]:
    """SLATE's convention: the first 70% is train, the next 15% val, the last 15% test."""
    n = len(items)
    bounds = {"train": (0, int(0.7 * n)), "val": (int(0.7 * n), int(0.85 * n)), "test": (int(0.85 * n), n)}
    start, stop = bounds[split]
    return list(items[start:stop])


class FolderDataset(ObjectDataset):
    """Images listed up front, read and resized on access.

    Args:
        name: registry name (for messages).
        files: the split's image files in order.
        annotations: one annotation per file (scene, mask path...), kept aligned with ``files``.
        image_size: side length S.
        crop: crop preset (see :mod:`implicit_slots.data.images`).
        resample: "bilinear", "bicubic" or "nearest" (images); masks always use nearest.
        num_samples: keep at most this many files.
        check_files: decode every file now; unreadable ones are skipped with one warning that counts them
            (by default a bad file raises :class:`ImageReadError` naming it when it is read).
    """

    def __init__(
        self,
        name: str,
        files: Sequence[Path],
        image_size: int,
        annotations: Sequence[Any] | None = None,
        *,
        crop: str,
        resample: str,
        num_samples: int | None,
        check_files: bool,
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"dataset {name!r}: unknown crop {crop!r}; valid crops: {list(CROPS)}")
        if resample not in RESAMPLE:
            raise ValueError(f"dataset {name!r}: unknown resample {resample!r}; valid: {sorted(RESAMPLE)}")
        self.name = name
        self.image_size = image_size
        self.crop = crop
        self.resample = resample
        files = list(files)
        notes = list(annotations) if annotations is not None else [None] * len(files)
        if num_samples is not None:
            files, notes = files[:num_samples], notes[:num_samples]
        self.skipped: list[Path] = []
        if check_files:
            good, good_notes = [], []
            for path, note in zip(files, notes):
                try:
                    read_rgb(path)
                    good.append(path)
                    good_notes.append(note)
                except ImageReadError:
                    self.skipped.append(path)
            if self.skipped:
                warnings.warn(
                    f"{name}: skipped {len(self.skipped)} unreadable image(s) of {len(files)}, "
                    f"first: {self.skipped[0]}",
                    stacklevel=2,
                )
            files, notes = good, good_notes
        self.files = files
        self.annotations = notes

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> np.ndarray:
        """float32 ``(3, S, S)`` of file ``index``."""
        path = self.files[index]
        return crop_and_resize(read_rgb(path), self.crop, self.image_size, self.resample, where=str(path))

    def extra(self, index: int) -> dict[str, np.ndarray]:
        """Masks/properties of sample ``index`` (subclasses)."""
        return {}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of size {len(self)}")
        item = {"image": torch.from_numpy(self.load_image(index))}
        item.update({key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in self.extra(index).items()})
        return item
