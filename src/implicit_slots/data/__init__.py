"""Data: procedural multi-object scenes (the embedded default) and loaders for real datasets on disk.

Entry point::

    from implicit_slots.data import build_dataset
    ds = build_dataset("clevr-lite", split="train", image_size=64, seed=0)
    s = ds[0]   # {"image": (3, H, W), "masks": (K+1, H, W), "properties": (K, 19)}

See :mod:`implicit_slots.data.schema` for the sample schema and docs/data.md for every dataset.
"""

from implicit_slots.data.images import ImageReadError
from implicit_slots.data.registry import (
    SPLITS,
    DatasetSpec,
    ObjectDataset,
    available_datasets,
    build_dataset,
    get_dataset_spec,
    materialise_dataset,
    register_dataset,
)
from implicit_slots.data.schema import (
    COLORS,
    MATERIALS,
    NUM_PROPERTIES,
    PROPERTY_SLICES,
    SHAPES,
    SIZES,
    SceneSchemaError,
    masks_from_labels,
    properties_from_objects,
)
from implicit_slots.data.tfrecord import TFRecordError

__all__ = [
    "COLORS",
    "MATERIALS",
    "NUM_PROPERTIES",
    "PROPERTY_SLICES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "DatasetSpec",
    "ImageReadError",
    "ObjectDataset",
    "SceneSchemaError",
    "TFRecordError",
    "available_datasets",
    "build_dataset",
    "get_dataset_spec",
    "masks_from_labels",
    "materialise_dataset",
    "properties_from_objects",
    "register_dataset",
]
