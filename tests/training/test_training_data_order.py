"""The resumable, rank-sharded sample order: exact resume position, disjoint shards, epochs."""

import pytest
import torch

from implicit_slots.training.data import BatchStream, SamplerState, ShardedEpochOrder, validation_batches


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(i)}


def _read(stream: BatchStream, count: int) -> list[list[int]]:
    return [stream.next()["index"].tolist() for _ in range(count)]


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    order = ShardedEpochOrder(10, batch_size=5, seed=3)
    stream = BatchStream(_Indexed(10), order, SamplerState())
    first, second = _read(stream, 2), _read(stream, 2)
    assert sorted(first[0] + first[1]) == list(range(10))
    assert sorted(second[0] + second[1]) == list(range(10))
    assert first != second
    assert stream.state == SamplerState(epoch=2, position=0)


def test_resuming_from_a_state_continues_the_exact_order() -> None:
    order = ShardedEpochOrder(11, batch_size=3, seed=0)  # 3 batches per epoch, 2 samples dropped
    full = _read(BatchStream(_Indexed(11), order, SamplerState()), 8)
    stream = BatchStream(_Indexed(11), order, SamplerState())
    _read(stream, 5)
    assert stream.state == SamplerState(epoch=1, position=6)
    resumed = _read(BatchStream(_Indexed(11), order, stream.state), 3)
    assert resumed == full[5:]


def test_resume_with_workers_matches_in_process_loading() -> None:
    order = ShardedEpochOrder(12, batch_size=4, seed=1)
    expected = _read(BatchStream(_Indexed(12), order, SamplerState(1, 4)), 4)
    with_workers = BatchStream(_Indexed(12), order, SamplerState(1, 4), num_workers=1)
    assert _read(with_workers, 4) == expected


def test_rank_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = [
        ShardedEpochOrder(8, batch_size=2, seed=5, rank=r, world_size=2).epoch_indices(0) for r in (0, 1)
    ]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(8))


def test_too_small_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fewer than one batch of 8 per rank"):
        ShardedEpochOrder(10, batch_size=8, seed=0, world_size=2)


def test_validation_batches_are_equal_sized_rank_shards() -> None:
    batches = [list(validation_batches(_Indexed(7), 2, None, rank=r, world_size=2)) for r in (0, 1)]
    assert [b["index"].tolist() for b in batches[0]] == [[0, 2], [4]]
    assert [b["index"].tolist() for b in batches[1]] == [[1, 3], [5]]
    assert len(list(validation_batches(_Indexed(7), 2, 1))) == 1
