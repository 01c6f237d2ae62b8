"""CLEVR v1.0 from its folder (``clevr``), and CLEVR6 (``clevr6``): scenes with at most 6 foreground objects.

Layout::

    ROOT/images/{train,val,test}/CLEVR_{split}_{%06d}.png
    ROOT/scenes/CLEVR_{train,val}_scenes.json

Samples carry ``image`` and, for train and val, ``properties`` (Locatello's layout from the scene JSON);
CLEVR has no masks. The test split has no scenes, so it has no properties and cannot be filtered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from implicit_slots.data.loaders.base import FOLDER_DEFAULTS, FolderDataset, require_dir
from implicit_slots.data.procedural import check_options
from implicit_slots.data.registry import register_dataset
from implicit_slots.data.schema import properties_from_objects

# Bilinear resizing, as Locatello et al.'s CLEVR pipeline (tf.image.resize), not SLATE's bicubic.
CLEVR_DEFAULTS: dict[str, Any] = {**FOLDER_DEFAULTS, "resample": "bilinear", "max_objects": 10}
CLEVR6_DEFAULTS: dict[str, Any] = {**CLEVR_DEFAULTS, "max_objects": 6}


def load_scenes(path: Path) -> list[dict[str, Any]]:
    """The ``scenes`` list of a CLEVR scenes JSON file (errors name the file)."""
    try:
        scenes = json.loads(path.read_text())["scenes"]
    except FileNotFoundError:
        raise FileNotFoundError(f"CLEVR scenes file not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a CLEVR scenes file ({error!r})") from None
    if not isinstance(scenes, list):
        raise ValueError(f"{path}: 'scenes' is not a list")
    return scenes


class ClevrDataset(FolderDataset):
    """CLEVR v1.0 images with their scene attributes (see the module docstring)."""

    has_masks = False

    scenes_path: Path | None = None

    def extra(self, index: int) -> dict[str, np.ndarray]:
        annotation = self.annotations[index]
        if annotation is None:
            return {}
        scene_index, scene = annotation
        where = f"{self.scenes_path}: scene {scene_index} ({self.files[index].name})"
        return {"properties": properties_from_objects(scene["objects"], self.num_objects_max, where=where)}


def _build(
    name: str,
    split: str,
    image_size: int,
    root: Path | None,
    num_samples: int | None,
    options: dict[str, Any],
) -> ClevrDataset:
    assert root is not None
    max_objects = int(options.pop("max_objects"))
    image_dir = require_dir(root / "images" / split, f"{name} {split} images")
    if split == "test":
        if name == "clevr6":
            raise ValueError(
                f"{name}: CLEVR v1.0's test split has no scenes, so the <= 6 objects filter cannot run"
            )
        files = sorted(image_dir.glob("*.png"))
        if not files:
            raise FileNotFoundError(f"{name}: no *.png images in {image_dir}")
        dataset = ClevrDataset(name, files, image_size, None, num_samples=num_samples, **options)
        dataset.num_objects_max, dataset.has_properties = max_objects, False
        return dataset
    scenes_path = root / "scenes" / f"CLEVR_{split}_scenes.json"
    scenes = load_scenes(scenes_path)
    present = {p.name for p in image_dir.iterdir()}
    files = []
    kept: list[tuple[int, dict[str, Any]]] = []  # (index in the scenes file, scene)
    for i, scene in enumerate(scenes):
        filename = scene.get("image_filename") if isinstance(scene, dict) else None
        if not isinstance(filename, str) or not isinstance(scene.get("objects"), list):
            raise ValueError(f"{scenes_path}: scene {i} lacks image_filename or objects")
        if filename not in present:
            raise FileNotFoundError(f"{scenes_path}: scene {i} names {filename}, not found in {image_dir}")
        if len(scene["objects"]) <= max_objects:  # CLEVR6: foreground objects <= 6
            files.append(image_dir / filename)
            kept.append((i, scene))
    if not files:
        raise FileNotFoundError(f"{name}: no scenes with <= {max_objects} objects in {scenes_path}")
    dataset = ClevrDataset(name, files, image_size, kept, num_samples=num_samples, **options)
    dataset.num_objects_max, dataset.has_properties = max_objects, True
    dataset.scenes_path = scenes_path
    return dataset


def build_clevr(
    split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
) -> ClevrDataset:
    """Builder of ``clevr`` (CLEVR v1.0; options crop, resample, max_objects, check_files)."""
    del seed
    return _build(
        "clevr", split, image_size, root, num_samples, check_options("clevr", options, CLEVR_DEFAULTS)
    )


def build_clevr6(
    split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
) -> ClevrDataset:
    """Builder of ``clevr6``: CLEVR v1.0 scenes with at most 6 foreground objects, K = 6."""
    del seed
    merged = check_options("clevr6", options, CLEVR6_DEFAULTS)
    return _build("clevr6", split, image_size, root, num_samples, merged)


register_dataset("clevr", build_clevr, "CLEVR v1.0 folder (images + scene attributes)", needs_root=True)
register_dataset("clevr6", build_clevr6, "CLEVR v1.0 folder, scenes with <= 6 objects", needs_root=True)
