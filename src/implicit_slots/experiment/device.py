"""The torch device a run uses (``training.device`` / ``--device``: ``auto``, ``cpu`` or ``cuda``)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` picks ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: ``cuda`` requested on a machine without CUDA, or an unknown preference.
    """
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("training.device is 'cuda' but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    raise ValueError(f"unknown device {preference!r}; valid: ['auto', 'cpu', 'cuda']")
