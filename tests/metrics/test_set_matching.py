"""Hungarian-Huber set loss: optimal matching (checked by brute force), Keras Huber, gradients."""

import itertools

import pytest
import torch

from implicit_slots.metrics import hungarian_huber_loss, hungarian_match, pad_set, pairwise_huber_cost


def _keras_huber(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    error = (x - y).abs()
    return torch.where(error <= 1, 0.5 * error**2, error - 0.5).mean(-1)


def test_pairwise_cost_is_keras_huber_mean() -> None:
    predictions, targets = torch.randn(2, 4, 5) * 2, torch.randn(2, 3, 5) * 2
    cost = pairwise_huber_cost(predictions, targets)
    assert cost.shape == (2, 3, 4)
    torch.testing.assert_close(cost[1, 2, 0], _keras_huber(predictions[1, 0], targets[1, 2]))


def test_loss_is_the_minimum_over_all_matchings() -> None:
    predictions, targets = torch.randn(3, 5, 19), torch.rand(3, 5, 19)
    loss = hungarian_huber_loss(predictions, targets)
    best = []
    for b in range(3):
        costs = [
            sum(_keras_huber(predictions[b, j], targets[b, i]) for i, j in enumerate(perm))
            for perm in itertools.permutations(range(5))
        ]
        best.append(min(costs))
    torch.testing.assert_close(loss, torch.stack(best).mean())


def test_permuted_predictions_give_zero_loss_and_the_permutation() -> None:
    targets = torch.rand(2, 4, 19)
    permutation = torch.tensor([2, 0, 3, 1])
    predictions = targets[:, permutation]  # prediction j = target permutation[j]
    assert hungarian_huber_loss(predictions, targets).item() == 0.0
    assignment = hungarian_match(pairwise_huber_cost(predictions, targets))
    assert assignment.tolist() == [torch.argsort(permutation).tolist()] * 2


def test_every_prediction_is_matched_and_gets_a_gradient() -> None:
    predictions = torch.randn(1, 3, 19, requires_grad=True)
    targets = torch.rand(1, 2, 19)
    hungarian_huber_loss(predictions, targets).backward()
    assert predictions.grad is not None
    nonzero = predictions.grad.abs().sum(-1)[0] > 0
    assert nonzero.all()  # two targets, three predictions: the third is matched to a zero row


def test_loss_equals_the_loss_against_zero_padded_targets() -> None:
    predictions, targets = torch.rand(2, 4, 19), torch.rand(2, 2, 19)
    padded = torch.cat([targets, torch.zeros(2, 2, 19)], dim=1)
    torch.testing.assert_close(
        hungarian_huber_loss(predictions, targets), hungarian_huber_loss(predictions, padded)
    )
    assert pad_set(targets, 4).shape == (2, 4, 19) and pad_set(padded, 4) is padded
    with pytest.raises(ValueError, match="do not fit"):
        pad_set(padded, 3)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="equal B and D"):
        hungarian_huber_loss(torch.randn(2, 3, 19), torch.randn(2, 3, 18))
    with pytest.raises(ValueError, match="Kt <= Kp"):
        hungarian_match(torch.randn(1, 4, 3))
