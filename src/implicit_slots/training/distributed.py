"""Process-group set-up for data-parallel training under ``torchrun`` (one code path with single-process).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when they are
present the engine joins the process group (NCCL on CUDA, gloo on CPU) and wraps the model in
``DistributedDataParallel``. Without them everything runs in one process with ``rank 0 / world 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistributedContext", "resolve_device", "setup_distributed"]


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


@dataclass
class DistributedContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 in single-process runs).
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
        device: this process's device.
        distributed: True when running under a process group (torchrun).
        owns_group: True when :func:`setup_distributed` created the group (and so destroys it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum over ranks (a no-op in single-process runs)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        """Maximum over ranks (a no-op in single-process runs)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def all_gather_object(self, value: object) -> list[object]:
        """Every rank's ``value``, in rank order."""
        if not self.distributed:
            return [value]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def shutdown(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device_preference: str) -> DistributedContext:
    """Join the torchrun process group when the launcher's environment variables are present.

    Args:
        device_preference: ``training.device`` (``auto`` / ``cpu`` / ``cuda``).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(0, 1, 0, resolve_device(device_preference), distributed=False)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    owns_group = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    return DistributedContext(rank, world_size, local_rank, device, distributed=True, owns_group=owns_group)
