"""DeepMind's multi_object_datasets (GZIP TFRecords of ``tf.train.Example``), read without TensorFlow.

Names and files (in ``root``):

============================  ============================================  ==========  =====
name                          file                                          image       K
============================  ============================================  ==========  =====
``dm-clevr-with-masks``       ``clevr_with_masks_train.tfrecords``          240x320x3   10
``dm-clevr6``                 same, scenes with <= 6 non-empty object masks 240x320x3   6
``dm-multi-dsprites``         ``multi_dsprites_<variant>.tfrecords``        64x64x{1,3} 3/5/4
``dm-objects-room``           ``objects_room_train.tfrecords``              64x64x3     6
``dm-tetrominoes``            ``tetrominoes_train.tfrecords``               35x35x3     3
============================  ============================================  ==========  =====

The first use converts the file once into ``convert_dir`` (default ``ROOT/converted``): shards of uint8
images ``(n, H, W, C)``, label maps ``(n, H, W)`` (the argmax over the entity masks; entity 0 is the
background) and per-record foreground counts, written atomically. Splits are the first 70% / next 15% /
last 15% of the records (of the first ``max_records`` when given); for CLEVR-with-masks' 100k records that
is the usual 70k/15k/15k. Samples carry ``image`` and ``masks``; the integer attribute codes are not mapped
to names (their vocabulary is unverified), so there are no ``properties``. ``dm-clevr6`` renumbers the
non-empty object masks 1..n in entity order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from implicit_slots.data.images import CROPS, RESAMPLE, crop_and_resize, crop_and_resize_labels
from implicit_slots.data.loaders.base import require_dir, split_sorted
from implicit_slots.data.procedural import check_options
from implicit_slots.data.registry import ObjectDataset, register_dataset
from implicit_slots.data.schema import masks_from_labels
from implicit_slots.data.tfrecord import TFRecordError, decode_example, read_records

_SHARD_SIZE = 4096
# Part of the conversion folder's name: conversions written before records were CRC-verified are not reused.
CONVERSION_VERSION = 2


@dataclass(frozen=True)
class MultiObjectFormat:
    """How one DeepMind file stores its records.

    Attributes:
        file: file name in the root folder.
        image_shape: (H, W, C).
        entities: mask entities including the background.
        mask_layout: "khw" (masks stored [K, H, W, 1]) or "hwk" ([H, W, K, 1], Multi-dSprites).
        crop: default crop preset.
    """

    file: str
    image_shape: tuple[int, int, int]
    entities: int
    mask_layout: str
    crop: str = "none"


_MULTI_DSPRITES = {
    "colored_on_grayscale": MultiObjectFormat(
        "multi_dsprites_colored_on_grayscale.tfrecords", (64, 64, 3), 6, "hwk"
    ),
    "colored_on_colored": MultiObjectFormat(
        "multi_dsprites_colored_on_colored.tfrecords", (64, 64, 3), 5, "hwk"
    ),
    "binarized": MultiObjectFormat("multi_dsprites_binarized.tfrecords", (64, 64, 1), 4, "hwk"),
}
CLEVR_WITH_MASKS = MultiObjectFormat(
    "clevr_with_masks_train.tfrecords", (240, 320, 3), 11, "khw", "locatello"
)
OBJECTS_ROOM = MultiObjectFormat("objects_room_train.tfrecords", (64, 64, 3), 7, "khw")
TETROMINOES = MultiObjectFormat("tetrominoes_train.tfrecords", (35, 35, 3), 4, "khw")


def decode_record(data: bytes, layout: MultiObjectFormat, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Image uint8 ``(H, W, C)`` and label map uint8 ``(H, W)`` of one serialised Example."""
    try:
        features = decode_example(data)
    except TFRecordError as error:
        raise TFRecordError(f"{where}: malformed Example ({error})") from None
    h, w, c = layout.image_shape
    arrays = {}
    for key, size in (("image", h * w * c), ("mask", layout.entities * h * w)):
        value = features.get(key)
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.size != size:
            got = "missing" if value is None else f"{getattr(value, 'size', len(value))} values"
            raise TFRecordError(f"{where}: feature {key!r} should hold {size} one-byte values, got {got}")
        arrays[key] = value
    image = arrays["image"].reshape(h, w, c)
    if layout.mask_layout == "hwk":
        masks = arrays["mask"].reshape(h, w, layout.entities).transpose(2, 0, 1)
    else:
        masks = arrays["mask"].reshape(layout.entities, h, w)
    return image, masks.argmax(axis=0).astype(np.uint8)


def check_conversion(folder: Path, layout: MultiObjectFormat) -> list[int]:
    """The shard sizes of a conversion folder, after checking that every shard file is there and whole.

    Raises:
        ValueError: a missing or unreadable ``meta.json`` or shard, or a shard whose shape disagrees with
            ``meta.json`` (the message names the file and says to delete the folder to convert again).
    """
    h, w, c = layout.image_shape
    advice = f"delete {folder} to convert the TFRecord file again"
    try:
        sizes = [int(size) for size in json.loads((folder / "meta.json").read_text())["shard_sizes"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{folder / 'meta.json'}: unreadable conversion metadata ({error}); {advice}"
        ) from None
    for shard, size in enumerate(sizes):
        expected = {
            f"images_{shard:05d}.npy": (size, h, w, c),
            f"labels_{shard:05d}.npy": (size, h, w),
            f"counts_{shard:05d}.npy": (size,),
        }
        for name, shape in expected.items():
            try:
                found = np.load(folder / name, mmap_mode="r").shape
            except (OSError, ValueError) as error:
                raise ValueError(f"{folder / name}: unreadable shard ({error}); {advice}") from None
            if found != shape:
                raise ValueError(f"{folder / name}: shape {found}, expected {shape}; {advice}")
    return sizes


def convert_tfrecord(
    path: Path, layout: MultiObjectFormat, convert_dir: Path, max_records: int | None
) -> Path:
    """Convert a TFRecord file to array shards once; returns the folder (re-used when present).

    Every record read is verified (see :func:`~implicit_slots.data.tfrecord.read_records`) and decoded
    into a temporary folder that is renamed into place only when the whole file (or its first
    ``max_records`` records) converted, so a damaged file leaves nothing behind; a folder that is reused is
    checked with :func:`check_conversion`.

    Raises:
        TFRecordError: a damaged record or Example (naming the file and the record index).
    """
    stat = path.stat()
    key = f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}-{max_records}-v{CONVERSION_VERSION}"
    target = convert_dir / key
    if (target / "meta.json").is_file():
        check_conversion(target, layout)
        return target
    convert_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=convert_dir))
    try:
        shard_sizes: list[int] = []
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []

        def flush() -> None:
            index = len(shard_sizes)
            np.save(temporary / f"images_{index:05d}.npy", np.stack(images))
            label_array = np.stack(labels)
            np.save(temporary / f"labels_{index:05d}.npy", label_array)
            counts = [(np.bincount(x.ravel(), minlength=layout.entities)[1:] > 0).sum() for x in label_array]
            np.save(temporary / f"counts_{index:05d}.npy", np.asarray(counts, np.int64))
            shard_sizes.append(len(images))
            images.clear()
            labels.clear()

        for index, data in enumerate(read_records(path)):
            if max_records is not None and index >= max_records:
                break
            image, label = decode_record(data, layout, f"{path}: record {index}")
            images.append(image)
            labels.append(label)
            if len(images) == _SHARD_SIZE:
                flush()
        if images:
            flush()
        if not shard_sizes:
            raise TFRecordError(f"{path}: no records")
        (temporary / "meta.json").write_text(json.dumps({"source": str(path), "shard_sizes": shard_sizes}))
        try:
            os.rename(temporary, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    check_conversion(target, layout)
    return target


class MultiObjectDataset(ObjectDataset):
    """Samples of a converted DeepMind file (see the module docstring).

    Args:
        name: registry name.
        folder: the converted shards.
        split: "train", "val" or "test".
        image_size: side length S.
        num_objects_max: K (mask channels K + 1).
        max_foreground: keep records with at most this many non-empty object masks and renumber them 1..n
            (None: keep all, entity ids as stored).
        crop, resample: see :mod:`implicit_slots.data.images`.
        num_samples: keep at most this many samples.
    """

    has_masks = True
    has_properties = False

    def __init__(
        self,
        name: str,
        folder: Path,
        split: str,
        image_size: int,
        num_objects_max: int,
        max_foreground: int | None,
        *,
        crop: str,
        resample: str,
        num_samples: int | None,
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"dataset {name!r}: unknown crop {crop!r}; valid crops: {list(CROPS)}")
        if resample not in RESAMPLE:
            raise ValueError(f"dataset {name!r}: unknown resample {resample!r}; valid: {sorted(RESAMPLE)}")
        self.name, self.folder, self.image_size = name, folder, image_size
        self.num_objects_max, self.max_foreground = num_objects_max, max_foreground
        self.crop, self.resample = crop, resample
        sizes = json.loads((folder / "meta.json").read_text())["shard_sizes"]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        indices = split_sorted(range(int(self.offsets[-1])), split)
        if max_foreground is not None:
            counts = np.concatenate([np.load(folder / f"counts_{i:05d}.npy") for i in range(len(sizes))])
            indices = [i for i in indices if counts[i] <= max_foreground]
        self.indices = indices[:num_samples] if num_samples is not None else indices
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._shards:
            self._shards[shard] = (
                np.load(self.folder / f"images_{shard:05d}.npy", mmap_mode="r"),
                np.load(self.folder / f"labels_{shard:05d}.npy", mmap_mode="r"),
            )
        return self._shards[shard]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        record = int(self.indices[index])
        shard = int(np.searchsorted(self.offsets, record, side="right")) - 1
        images, labels = self._shard(shard)
        image = np.asarray(images[record - self.offsets[shard]])  # (H, W, C)
        label = np.asarray(labels[record - self.offsets[shard]]).astype(np.int64)  # (H, W)
        if self.max_foreground is not None:  # renumber non-empty objects 1..n
            present = np.unique(label[label > 0])
            lookup = np.zeros(int(label.max()) + 1, np.int64)
            lookup[present] = np.arange(1, present.size + 1)
            label = lookup[label]
        where = f"{self.name} record {record}"
        picture = crop_and_resize(image, self.crop, self.image_size, self.resample, where=where)
        if picture.shape[0] == 1:
            picture = np.repeat(picture, 3, axis=0)
        label = crop_and_resize_labels(label, self.crop, self.image_size, where=where)
        return {
            "image": torch.from_numpy(picture),  # (3, S, S)
            "masks": torch.from_numpy(masks_from_labels(label, self.num_objects_max)),  # (K+1, S, S)
        }


# Dataset name -> its options and their defaults (filled in as the names are registered below). Images are
# resized bilinearly by default, as Locatello et al.'s pipeline (tf.image.resize) does.
MULTI_OBJECT_DEFAULTS: dict[str, dict[str, Any]] = {}


def _builder(name: str, layouts: dict[str, MultiObjectFormat], max_foreground: int | None) -> Any:
    default_variant = next(iter(layouts))
    defaults: dict[str, Any] = {
        "crop": layouts[default_variant].crop,
        "resample": "bilinear",
        "max_records": None,
        "convert_dir": None,
    }
    if len(layouts) > 1:
        defaults["variant"] = default_variant
    MULTI_OBJECT_DEFAULTS[name] = defaults

    def build(
        split: str, image_size: int, seed: int, *, root: Path | None, num_samples: int | None, **options: Any
    ) -> MultiObjectDataset:
        del seed
        assert root is not None
        merged = check_options(name, options, defaults)
        variant = merged.pop("variant", default_variant)
        if variant not in layouts:
            raise ValueError(f"dataset {name!r}: unknown variant {variant!r}; valid: {sorted(layouts)}")
        layout = layouts[variant]
        path = require_dir(root, f"{name} root") / layout.file
        if not path.is_file():
            raise FileNotFoundError(f"{name}: TFRecord file not found: {path}")
        convert_dir = Path(merged["convert_dir"]) if merged["convert_dir"] else root / "converted"
        folder = convert_tfrecord(path, layout, convert_dir, merged["max_records"])
        k = max_foreground if max_foreground is not None else layout.entities - 1
        return MultiObjectDataset(
            name,
            folder,
            split,
            image_size,
            k,
            max_foreground,
            crop=merged["crop"],
            resample=merged["resample"],
            num_samples=num_samples,
        )

    return build


for _name, _layouts, _max_foreground, _description in (
    (
        "dm-clevr-with-masks",
        {"default": CLEVR_WITH_MASKS},
        None,
        "DeepMind CLEVR-with-masks TFRecord (masks)",
    ),
    ("dm-clevr6", {"default": CLEVR_WITH_MASKS}, 6, "DeepMind CLEVR-with-masks, <= 6 objects (masks)"),
    ("dm-multi-dsprites", _MULTI_DSPRITES, None, "DeepMind Multi-dSprites TFRecord (masks)"),
    ("dm-objects-room", {"default": OBJECTS_ROOM}, None, "DeepMind Objects Room TFRecord (masks)"),
    ("dm-tetrominoes", {"default": TETROMINOES}, None, "DeepMind Tetrominoes TFRecord (masks)"),
):
    register_dataset(_name, _builder(_name, _layouts, _max_foreground), _description, needs_root=True)
