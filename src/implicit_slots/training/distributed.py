"""Process-group set-up for data-parallel training under ``torchrun`` (one code path with single-process).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when they are
present the engine joins the process group (NCCL on CUDA, gloo on CPU) and wraps the model in
``DistributedDataParallel``. Without them everything runs in one process with ``rank 0 / world 1``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from implicit_slots.experiment.device import resolve_device

__all__ = ["DistributedContext", "register_output_pytrees", "resolve_device", "setup_distributed"]


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

    def _all_reduce(self, tensor: Tensor, op: dist.ReduceOp.RedOpType) -> Tensor:
        if not self.distributed:
            return tensor
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
        on_device = tensor.to(self.device)
        dist.all_reduce(on_device, op=op)
        return on_device.to(tensor.device)

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum over ranks (the tensor itself in single-process runs), on ``tensor``'s device."""
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        """Maximum over ranks (the tensor itself in single-process runs), on ``tensor``'s device."""
        return self._all_reduce(tensor, dist.ReduceOp.MAX)

    def all_gather_object(self, value: object) -> list[object]:
        """Every rank's ``value``, in rank order."""
        if not self.distributed:
            return [value]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def synchronize(self) -> None:
        """Wait until every rank gets here (no-op in single-process runs)."""
        if self.distributed:
            dist.barrier()

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


def _flatten_dataclass(obj: Any) -> tuple[list[Any], Any]:
    names = tuple(f.name for f in dataclasses.fields(obj))
    return [getattr(obj, name) for name in names], (type(obj), names)


def _unflatten_dataclass(values: Any, context: Any) -> Any:
    cls, names = context
    obj = cls.__new__(cls)  # no __init__ / __post_init__: the fields are set as they were
    for name, value in zip(names, values):
        object.__setattr__(obj, name, value)
    return obj


def register_output_pytrees(obj: Any) -> None:
    """Make every dataclass in a model output a pytree node (recursively), once per type.

    DistributedDataParallel finds the output tensors it must route through its autograd "sink" with
    ``torch.utils._pytree.tree_flatten``, which treats unregistered dataclasses as opaque leaves. With
    ``ModelOutput`` dataclasses DDP then never syncs gradients under ``static_graph`` and cannot handle
    outputs that do not reach the loss (the slot-attention output's ``initial_slots``). The engine calls
    this from a forward hook, before DDP inspects the output.
    """
    from torch.utils import _pytree as pytree

    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        if isinstance(obj, (list, tuple)):
            for item in obj:
                register_output_pytrees(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                register_output_pytrees(item)
        return
    cls = type(obj)
    if cls not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(
            cls,
            _flatten_dataclass,
            _unflatten_dataclass,
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        )
    for field in dataclasses.fields(obj):
        register_output_pytrees(getattr(obj, field.name))
