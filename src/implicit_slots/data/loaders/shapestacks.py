"""ShapeStacks from its folder, with the variants pooled as in the paper (SLATE, Chang et al.).

Layout::

    ROOT/splits/{blocks_all,ccs_all,...}/{train,eval,test}.txt      # scenario names, one a line
    ROOT/recordings/<scenario>/rgb-*-mono-0.png                     # 224x224, several per scenario
    ROOT/iseg/<scenario>/iseg-w=0-f=0-l=0-c=original-cam_<k>-mono-0.map   # optional instance maps

The split's scenarios are the union over ``split_sets`` (default ``blocks_all`` and ``ccs_all``: every
variant); ``val`` reads ``eval.txt``. With ``masks=True`` each image's instance map (same camera) gives the
masks: value 0 of its first channel is the background, the other values in increasing order objects 1..n
(n <= 6 = K). The mapping of ShapeStacks' colour codes to object order is not used (unverified).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from implicit_slots.data.images import crop_and_resize_labels, read_label_image
from implicit_slots.data.loaders.base import FOLDER_DEFAULTS, FolderDataset, require_dir
from implicit_slots.data.procedural import check_options
from implicit_slots.data.registry import register_dataset
from implicit_slots.data.schema import masks_from_labels

SHAPESTACKS_DEFAULTS: dict[str, Any] = {
    **FOLDER_DEFAULTS,
    "split_sets": ("blocks_all", "ccs_all"),
    "masks": False,
}
MAX_SHAPES = 6
_SPLIT_FILES = {"train": "train.txt", "val": "eval.txt", "test": "test.txt"}
_CAMERA = re.compile(r"cam_(\d+)")


class ShapeStacksDataset(FolderDataset):
    """ShapeStacks images, optionally with instance masks (see the module docstring)."""

    has_properties = False
    num_objects_max = MAX_SHAPES

    def extra(self, index: int) -> dict[str, np.ndarray]:
        if not self.has_masks:
            return {}
        path = Path(str(self.annotations[index]))
        raw = read_label_image(path)
        values = np.unique(raw)
        objects = values[values != 0]
        if objects.size > self.num_objects_max:
            raise ValueError(f"{path}: {objects.size} instance values, more than {self.num_objects_max}")
        labels = np.searchsorted(np.concatenate([[0], objects]), raw) if objects.size else np.zeros_like(raw)
        labels = crop_and_resize_labels(labels.astype(np.int64), self.crop, self.image_size, where=str(path))
        return {"masks": masks_from_labels(labels, self.num_objects_max)}


def build_shapestacks(
    split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
) -> ShapeStacksDataset:
    """Builder of ``shapestacks`` (options split_sets, masks, crop, resample, check_files)."""
    del seed
    assert root is not None
    merged = check_options("shapestacks", options, SHAPESTACKS_DEFAULTS)
    split_sets = merged.pop("split_sets")
    split_sets = (split_sets,) if isinstance(split_sets, str) else tuple(split_sets)
    with_masks = bool(merged.pop("masks"))
    require_dir(root, "shapestacks root")
    scenarios: set[str] = set()
    for split_set in split_sets:
        path = root / "splits" / split_set / _SPLIT_FILES[split]
        if not path.is_file():
            raise FileNotFoundError(f"shapestacks: split file not found: {path}")
        scenarios.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    recordings = require_dir(root / "recordings", "shapestacks recordings")
    files: list[Path] = []
    maps: list[Path] = []
    for scenario in sorted(scenarios):
        folder = require_dir(recordings / scenario, f"shapestacks scenario listed in {split} split")
        for image in sorted(folder.glob("rgb-*-mono-0.png")):
            files.append(image)
            if with_masks:
                camera = _CAMERA.search(image.name)
                if camera is None:
                    raise ValueError(f"shapestacks: no cam_<k> in image name {image}")
                mask = (
                    root / "iseg" / scenario / f"iseg-w=0-f=0-l=0-c=original-cam_{camera.group(1)}-mono-0.map"
                )
                if not mask.is_file():
                    raise FileNotFoundError(f"shapestacks: image {image} has no instance map {mask}")
                maps.append(mask)
    if not files:
        raise FileNotFoundError(f"shapestacks {split}: no rgb-*-mono-0.png images under {recordings}")
    dataset = ShapeStacksDataset(
        "shapestacks", files, image_size, maps if with_masks else None, num_samples=num_samples, **merged
    )
    dataset.has_masks = with_masks
    return dataset


register_dataset("shapestacks", build_shapestacks, "ShapeStacks folder, all variants pooled", needs_root=True)
