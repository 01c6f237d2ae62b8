"""CLEVR-Mirror (SLATE's dataset) from a folder: sorted ``*.png`` files split 70/15/15.

Layout: ``ROOT/images/*.png`` (or ``ROOT/*.png``), optionally ``ROOT/scenes/<image stem>.json`` in CLEVR's
per-image scene schema. With scenes, samples carry ``properties`` (K = ``max_objects``) and every image
must have its scene file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from implicit_slots.data.loaders.base import FOLDER_DEFAULTS, FolderDataset, require_dir, split_sorted
from implicit_slots.data.procedural import check_options
from implicit_slots.data.registry import register_dataset
from implicit_slots.data.schema import properties_from_objects

CLEVR_MIRROR_DEFAULTS: dict[str, Any] = {**FOLDER_DEFAULTS, "max_objects": 10}


class ClevrMirrorDataset(FolderDataset):
    """CLEVR-Mirror images (and attributes when ``scenes/`` is present)."""

    has_masks = False

    def extra(self, index: int) -> dict[str, np.ndarray]:
        scene_path = self.annotations[index]
        if scene_path is None:
            return {}
        try:
            objects = json.loads(Path(scene_path).read_text())["objects"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{scene_path}: not a CLEVR scene file ({error!r})") from None
        return {"properties": properties_from_objects(objects, self.num_objects_max, where=str(scene_path))}


def build_clevr_mirror(
    split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
) -> ClevrMirrorDataset:
    """Builder of ``clevr-mirror`` (options crop, resample, max_objects, check_files)."""
    del seed
    assert root is not None
    merged = check_options("clevr-mirror", options, CLEVR_MIRROR_DEFAULTS)
    max_objects = int(merged.pop("max_objects"))
    require_dir(root, "clevr-mirror root")
    image_dir = root / "images" if (root / "images").is_dir() else root
    files = sorted(image_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"clevr-mirror: no *.png images in {image_dir}")
    scene_dir = root / "scenes"
    scenes: list[Path] | None = None
    if scene_dir.is_dir():
        scenes = [scene_dir / f"{path.stem}.json" for path in files]
        for image, scene in zip(files, scenes):
            if not scene.is_file():
                raise FileNotFoundError(f"clevr-mirror: image {image} has no scene file {scene}")
    files = split_sorted(files, split)
    scenes = split_sorted(scenes, split) if scenes is not None else None
    dataset = ClevrMirrorDataset("clevr-mirror", files, image_size, scenes, num_samples=num_samples, **merged)
    dataset.num_objects_max, dataset.has_properties = max_objects, scenes is not None
    return dataset


register_dataset("clevr-mirror", build_clevr_mirror, "CLEVR-Mirror folder (sorted 70/15/15)", needs_root=True)
