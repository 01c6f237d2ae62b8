"""COCO-2017 images from a folder (images only: samples carry ``image``).

Accepted layouts: FiftyOne's ``ROOT/{train,validation,test}/data/*.jpg`` and the official
``ROOT/{train2017,val2017,test2017}/*.jpg``. Grayscale COCO images are expanded to RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from implicit_slots.data.loaders.base import FOLDER_DEFAULTS, FolderDataset, require_dir
from implicit_slots.data.procedural import check_options
from implicit_slots.data.registry import register_dataset

_FIFTYONE = {"train": "train", "val": "validation", "test": "test"}
_OFFICIAL = {"train": "train2017", "val": "val2017", "test": "test2017"}


def build_coco(
    split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
) -> FolderDataset:
    """Builder of ``coco`` (options crop, resample, check_files)."""
    del seed
    assert root is not None
    merged = check_options("coco", options, FOLDER_DEFAULTS)
    require_dir(root, "coco root")
    candidates = [root / _FIFTYONE[split] / "data", root / _OFFICIAL[split]]
    image_dir = next((c for c in candidates if c.is_dir()), None)
    if image_dir is None:
        raise FileNotFoundError(
            f"coco {split}: neither {candidates[0]} (FiftyOne) nor {candidates[1]} (official)"
        )
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"coco {split}: no .jpg/.png images in {image_dir}")
    return FolderDataset("coco", files, image_size, num_samples=num_samples, **merged)


register_dataset(
    "coco", build_coco, "COCO-2017 folder, FiftyOne or official layout (images only)", needs_root=True
)
