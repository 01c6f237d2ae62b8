"""Full-state checkpoints, written atomically, and the RNG state of every random source.

Training writes them and evaluation reads them. A checkpoint (``RUN_DIR/checkpoints/last.pt``,
:data:`CHECKPOINT_NAME`) is a dict of plain Python values and tensors (it loads
with ``torch.load(..., weights_only=True)``):

- ``format_version``, ``step`` (updates done), ``world_size``;
- ``model`` / ``optimizer``: state dicts (the model unwrapped from DDP);
- ``plateau``: the plateau rule's state or None; ``hyperparameters``: scheduled values at ``step``;
- ``data``: ``{"epoch", "position"}`` of the sample order (position: samples of the epoch consumed by all
  ranks together);
- ``rng``: one entry per rank (python ``random``, numpy, torch CPU, torch CUDA);
- ``bad_steps``: ``{"consecutive", "total"}`` skipped-step counters;
- ``config``: the resolved config as a dict (for reading a checkpoint without its run folder).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "CheckpointWriteError",
    "assert_finite_state",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_state",
    "restore_rng_state",
    "save_checkpoint_atomic",
    "seed_everything",
]

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoints/last.pt"
"""The checkpoint's path inside a run folder."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (full disk, lost mount, ...); the previous checkpoint file is intact."""


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """The state of every random source this process uses (numpy's as tensors, for ``weights_only``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`capture_rng_state` output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _non_finite_entries(prefix: str, value: Any) -> list[str]:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            return [] if bool(torch.isfinite(value).all()) else [prefix]
        return []
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in _non_finite_entries(f"{prefix}.{key}", item)]
    if isinstance(value, (list, tuple)):
        return [name for i, item in enumerate(value) for name in _non_finite_entries(f"{prefix}.{i}", item)]
    return []


def assert_finite_state(checkpoint: dict[str, Any]) -> None:
    """Refuse non-finite model parameters/buffers or optimizer state (a weights file has none).

    Raises:
        ValueError: naming the first offending entries.
    """
    bad = _non_finite_entries("model", checkpoint["model"]) + _non_finite_entries(
        "optimizer", checkpoint.get("optimizer", {})
    )
    if bad:
        raise ValueError(f"refusing to write a checkpoint with NaN/Inf values in {bad[:5]}")


def save_checkpoint_atomic(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A reader (or a run killed mid-write) sees either the previous file or the new one, never a partial
    file. Non-finite model or optimizer state is refused (:func:`assert_finite_state`).

    Raises:
        CheckpointWriteError: the write failed (e.g. ENOSPC); the temporary file is removed and the file
            at ``path``, if any, is left as it was.
    """
    assert_finite_state(checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half-written file
        if path.is_dir():
            previous = "that path is a folder; give a file name"
        elif path.exists():
            previous = "the previous checkpoint there is intact"
        else:
            previous = "no checkpoint was kept"
        raise CheckpointWriteError(
            error.errno,
            f"could not write the checkpoint {str(path)!r} ({error.strerror or error}); {previous}",
        ) from error
    return path


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint_atomic`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable checkpoint (truncated, corrupt, not written by torch.save),
            or has an unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # the unpickler raises many types on garbage (KeyError on b"junk\n")
        # torch's own message suggests weights_only=False, which would be wrong advice for a damaged file.
        raise ValueError(
            f"{path}: not a readable checkpoint (corrupt, truncated or not written by implicit-slots; "
            f"torch.load raised {type(error).__name__})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint (holds a {type(checkpoint).__name__})")
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version!r}, expected {CHECKPOINT_FORMAT_VERSION}")
    return checkpoint


def load_model_state(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """``model.load_state_dict(state)``, or one ValueError naming what does not fit.

    A checkpoint that does not fit the model its own config builds was written by code with another
    architecture (an older or newer implicit-slots); torch's error lists every key, this one names the
    first few of each kind and the likely cause.

    Args:
        model: the model built from the run's config.
        state: the checkpoint's ``model`` state dict.
        source: the checkpoint's path (for the message).
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} (model: {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    problems = [
        f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)} in all)"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if keys
    ]
    if problems:
        raise ValueError(
            f"{source}: the checkpoint does not fit the {type(model).__name__} its config builds: "
            f"{'; '.join(problems)}. It was probably written by another version of implicit-slots."
        )
    model.load_state_dict(state)
