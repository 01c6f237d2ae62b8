"""Metrics as pure, documented functions (shapes and semantics in each docstring).

- :func:`adjusted_rand_index`: ARI / FG-ARI of slot masks against ground-truth segmentations.
- :func:`average_precision`: Locatello et al.'s CLEVR set-prediction AP at a distance threshold.
- :func:`hungarian_huber_loss`: the set-prediction loss (Huber costs over a Hungarian matching of every
  slot; :func:`pad_set` pads the targets with "no object" rows).
- :func:`per_image_squared_error`: SLATE's reconstruction error (per-image sum on [0, 1]).
- :func:`build_image_distance`: FID with the standard Inception weights file, else a proxy distance.

See docs/metrics.md for the conventions and how they relate to the papers.
"""

from implicit_slots.metrics.ari import adjusted_rand_index
from implicit_slots.metrics.average_precision import (
    AP_THRESHOLDS,
    PROPERTY_DIM,
    average_precision,
    compute_average_precision,
)
from implicit_slots.metrics.image_distance import ImageDistance, ProxyFeatureExtractor, build_image_distance
from implicit_slots.metrics.inception import FID_WEIGHTS_FILENAME, FIDInceptionV3, load_fid_inception
from implicit_slots.metrics.mse import per_image_squared_error
from implicit_slots.metrics.set_matching import (
    hungarian_huber_loss,
    hungarian_match,
    pad_set,
    pairwise_huber_cost,
)

__all__ = [
    "AP_THRESHOLDS",
    "FID_WEIGHTS_FILENAME",
    "PROPERTY_DIM",
    "FIDInceptionV3",
    "ImageDistance",
    "ProxyFeatureExtractor",
    "adjusted_rand_index",
    "average_precision",
    "build_image_distance",
    "compute_average_precision",
    "hungarian_huber_loss",
    "hungarian_match",
    "load_fid_inception",
    "pad_set",
    "pairwise_huber_cost",
    "per_image_squared_error",
]
