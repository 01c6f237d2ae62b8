"""Data for the engine: a resumable, rank-sharded sample order (the dataset factory is in
:mod:`implicit_slots.experiment.datasets`).

The order of training samples is a pure function of ``(seed, epoch)``; the position inside an epoch is
the only other state. A checkpoint stores ``(epoch, position)``, so a resumed run reads exactly the
batches the uninterrupted run would have read, with or without DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as torch_default_collate

# Re-exported: code outside the engine imports the dataset factory from here.
from implicit_slots.experiment.datasets import DatasetFactory, build_dataset_split

__all__ = [
    "BatchStream",
    "DatasetFactory",
    "SamplerState",
    "ShardedEpochOrder",
    "build_dataset_split",
    "collate",
    "validation_batches",
]


def collate(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack a list of sample dicts into a batch dict (each value gains a leading batch dimension)."""
    return torch_default_collate(list(samples))


@dataclass
class SamplerState:
    """Where the sample order stands: ``position`` samples of epoch ``epoch`` consumed (per rank)."""

    epoch: int = 0
    position: int = 0


class ShardedEpochOrder:
    """Shuffled epochs of sample indices, sharded over ranks like ``DistributedSampler``.

    Epoch ``e`` is ``torch.randperm(n)`` under a generator seeded with ``seed + e``; it is padded by
    wrapping around to a multiple of ``world_size`` and rank ``r`` takes positions ``r, r + W, ...``.
    Each rank reads ``batch_size`` indices at a time; the incomplete last batch of an epoch is dropped, so
    all ranks take the same number of steps per epoch.

    Args:
        num_samples: dataset size.
        batch_size: per-rank batch size.
        seed: order seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        per_rank = -(-num_samples // world_size)
        if per_rank < batch_size:
            raise ValueError(
                f"the training split has {num_samples} samples: fewer than one batch of {batch_size} "
                f"per rank ({world_size} rank(s)); lower training.batch_size or raise data.num_samples.train"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = per_rank // batch_size

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch`` in reading order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        total = -(-self.num_samples // self.world_size) * self.world_size
        order = (order * (total // len(order) + 1))[:total]
        return order[self.rank : total : self.world_size]

    def advance(self, state: SamplerState) -> SamplerState:
        """The state after reading one batch from ``state``."""
        position = state.position + self.batch_size
        if position + self.batch_size > self.batches_per_epoch * self.batch_size:
            return SamplerState(state.epoch + 1, 0)
        return SamplerState(state.epoch, position)

    def batches(self, state: SamplerState) -> Iterator[list[int]]:
        """Endless batches of indices from ``state`` on."""
        cache_epoch, cache = -1, []
        while True:
            if state.epoch != cache_epoch:
                cache_epoch, cache = state.epoch, self.epoch_indices(state.epoch)
            yield cache[state.position : state.position + self.batch_size]
            state = self.advance(state)


class BatchStream:
    """Endless training batches with a checkpointable position.

    ``state`` counts batches *consumed* by the loop, not batches prefetched by DataLoader workers, so it
    is exact whatever ``num_workers`` is.

    Args:
        dataset: the training split (map-style, samples are dicts of tensors).
        order: the sample order.
        state: where to start.
        num_workers: DataLoader workers (0: load in this process).
        worker_seed: seeds the workers' base seed (independent of the global torch RNG, so that starting
            the workers never changes the training randomness).
    """

    def __init__(
        self,
        dataset: Dataset,
        order: ShardedEpochOrder,
        state: SamplerState,
        num_workers: int = 0,
        worker_seed: int = 0,
    ) -> None:
        self.dataset, self.order, self.state = dataset, order, state
        self._iterator: Iterator[Any]
        if num_workers == 0:
            self._iterator = (collate([dataset[i] for i in batch]) for batch in order.batches(state))
        else:
            loader = DataLoader(
                dataset,
                batch_sampler=order.batches(state),
                num_workers=num_workers,
                collate_fn=collate,
                generator=torch.Generator().manual_seed(worker_seed),
                persistent_workers=False,
            )
            self._iterator = iter(loader)

    def next(self) -> dict[str, Tensor]:
        """The next batch; advances :attr:`state`."""
        batch: dict[str, Tensor] = next(self._iterator)
        self.state = self.order.advance(self.state)
        return batch


def validation_batches(
    dataset: Dataset, batch_size: int, num_batches: int | None, rank: int = 0, world_size: int = 1
) -> Iterator[dict[str, Tensor]]:
    """Fixed-order validation batches of this rank's shard (equal shard sizes on every rank).

    Rank ``r`` reads samples ``r, r + W, ...`` of the first ``W * floor(n / W)`` samples, so every rank
    runs the same number of batches (collectives stay matched).
    """
    n = len(dataset)  # type: ignore[arg-type]
    usable = (n // world_size) * world_size
    indices = list(range(rank, usable, world_size))
    for count, start in enumerate(range(0, len(indices), batch_size)):
        if num_batches is not None and count >= num_batches:
            return
        yield collate([dataset[i] for i in indices[start : start + batch_size]])
