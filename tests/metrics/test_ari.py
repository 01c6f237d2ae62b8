"""ARI / FG-ARI against an independent pair-counting reference and hand-computed cases."""

import numpy as np
import pytest
import torch
from scipy.special import comb

from implicit_slots.metrics import adjusted_rand_index


def _one_hot(labels: np.ndarray, num_channels: int) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, K, H, W) one-hot masks; label -1 = unlabelled (all zeros)."""
    labels_t = torch.as_tensor(labels)
    masks = torch.zeros(labels_t.shape[0], num_channels, *labels_t.shape[1:])
    for k in range(num_channels):
        masks[:, k] = (labels_t == k).float()
    return masks


def _reference_ari(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Hubert-Arabie ARI from a contingency table with binomial coefficients (labels >= 0 only)."""
    keep = true_labels >= 0
    true_labels, pred_labels = true_labels[keep], pred_labels[keep]
    _, true_ids = np.unique(true_labels, return_inverse=True)
    _, pred_ids = np.unique(pred_labels, return_inverse=True)
    table = np.zeros((true_ids.max() + 1, pred_ids.max() + 1))
    np.add.at(table, (true_ids, pred_ids), 1)
    index = comb(table, 2).sum()
    rows = comb(table.sum(1), 2).sum()
    columns = comb(table.sum(0), 2).sum()
    expected = rows * columns / comb(len(true_labels), 2)
    maximum = (rows + columns) / 2
    return float((index - expected) / (maximum - expected))


def test_random_labelings_match_reference() -> None:
    rng = np.random.default_rng(0)
    true_labels = rng.integers(0, 4, size=(16, 6, 7))
    pred_labels = rng.integers(0, 5, size=(16, 6, 7))
    # Make some images partly agree so the scores spread over [0, 1].
    pred_labels[8:] = np.where(rng.random((8, 6, 7)) < 0.7, true_labels[8:], pred_labels[8:])
    ari = adjusted_rand_index(_one_hot(true_labels, 4), _one_hot(pred_labels, 5))
    expected = [_reference_ari(t.ravel(), p.ravel()) for t, p in zip(true_labels, pred_labels)]
    assert ari.dtype == torch.float64
    assert ari.shape == (16,)
    np.testing.assert_allclose(ari.numpy(), expected, rtol=0, atol=1e-12)
    assert ari[8:].min() > 0.2 and ari[:8].abs().max() < 0.2


def test_permuted_labels_score_one() -> None:
    rng = np.random.default_rng(1)
    true_labels = rng.integers(0, 5, size=(3, 8, 8))
    permutation = np.array([3, 0, 6, 1, 2])  # into 7 predicted slots, two of them empty
    ari = adjusted_rand_index(_one_hot(true_labels, 5), _one_hot(permutation[true_labels], 7))
    np.testing.assert_allclose(ari.numpy(), 1.0, atol=1e-12)


def test_soft_predictions_use_argmax() -> None:
    rng = np.random.default_rng(2)
    true_labels = rng.integers(0, 3, size=(2, 5, 5))
    logits = torch.randn(2, 4, 5, 5)
    pred_labels = logits.argmax(1).numpy()
    soft = torch.softmax(logits, dim=1)
    ari = adjusted_rand_index(_one_hot(true_labels, 3), soft)
    expected = [_reference_ari(t.ravel(), p.ravel()) for t, p in zip(true_labels, pred_labels)]
    np.testing.assert_allclose(ari.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("true_labels", "pred_labels", "expected"),
    [
        # a = (2, 2), b = (3, 1): index 1, expected 2*3/6 = 1, max 2.5 -> 0.
        ([0, 0, 1, 1], [0, 0, 0, 1], 0.0),
        # a = (3, 3), b = (2, 2, 2): index 2, expected 6*3/15 = 1.2, max 4.5 -> 0.8 / 3.3.
        ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2], 8 / 33),
        # a = (2, 2), b = (2, 2) crossed: index 0, expected 2*2/6, max 2 -> (0 - 2/3) / (4/3) = -0.5.
        ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
    ],
)
def test_hand_cases(true_labels: list[int], pred_labels: list[int], expected: float) -> None:
    true = _one_hot(np.array([[true_labels]]), 3)
    pred = _one_hot(np.array([[pred_labels]]), 3)
    assert adjusted_rand_index(true, pred).item() == pytest.approx(expected, abs=1e-12)


def test_fg_ari_ignores_background_pixels() -> None:
    # Channel 0 = background. Objects 1 and 2 are segmented perfectly; the background pixels are
    # assigned to the objects' slots at random, which ruins ARI but must not change FG-ARI.
    rng = np.random.default_rng(3)
    true_labels = np.zeros((1, 10, 10), dtype=int)
    true_labels[0, 1:4, 1:4] = 1
    true_labels[0, 6:9, 5:9] = 2
    pred_labels = true_labels.copy()
    background = true_labels == 0
    pred_labels[background] = rng.integers(1, 3, size=background.sum())
    true, pred = _one_hot(true_labels, 3), _one_hot(pred_labels, 3)
    assert adjusted_rand_index(true, pred, exclude_background=True).item() == pytest.approx(1.0)
    ari = adjusted_rand_index(true, pred).item()
    assert ari == pytest.approx(_reference_ari(true_labels.ravel(), pred_labels.ravel()), abs=1e-12)
    assert ari < 0.5
    # FG-ARI equals the reference restricted to foreground pixels.
    pred_labels[0, 2, 2] = 2  # one foreground error
    fg_ari = adjusted_rand_index(true, _one_hot(pred_labels, 3), exclude_background=True).item()
    masked_true = np.where(true_labels == 0, -1, true_labels)
    assert fg_ari == pytest.approx(_reference_ari(masked_true.ravel(), pred_labels.ravel()), abs=1e-12)
    assert fg_ari < 1.0


def test_degenerate_cases_score_one() -> None:
    one_segment = torch.ones(2, 1, 4, 4)
    assert adjusted_rand_index(one_segment, torch.ones(2, 3, 4, 4)).tolist() == [1.0, 1.0]
    # FG-ARI of an image without foreground: no labelled pixel at all.
    background_only = torch.cat([torch.ones(1, 1, 4, 4), torch.zeros(1, 2, 4, 4)], dim=1)
    assert (
        adjusted_rand_index(background_only, torch.randn(1, 3, 4, 4), exclude_background=True).item() == 1.0
    )
    # A single foreground object predicted by one slot: single cluster on both sides.
    single = torch.zeros(1, 2, 4, 4)
    single[0, 0] = 1
    single[0, 0, :2, :2] = 0
    single[0, 1, :2, :2] = 1
    assert adjusted_rand_index(single, torch.randn(1, 3, 4, 4) * 0, exclude_background=True).item() == 1.0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="batch and spatial sizes"):
        adjusted_rand_index(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, Kt, H, W\)"):
        adjusted_rand_index(torch.ones(3, 4, 4), torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="background channel"):
        adjusted_rand_index(torch.ones(2, 1, 4, 4), torch.ones(2, 3, 4, 4), exclude_background=True)
