"""AP on hand-built CLEVR scenes: every rule of Locatello's ``average_precision_clevr``."""

import math

import numpy as np
import pytest
import torch

from implicit_slots.metrics import AP_THRESHOLDS, average_precision


def _object(
    x: float, y: float, size: int, material: int, shape: int, colour: int, flag: float = 1.0
) -> np.ndarray:
    """A 19-dim property vector from CLEVR units and attribute indices; ``flag`` = real / confidence."""
    vector = np.zeros(19)
    vector[0:3] = (np.array([x, y, 0.35]) + 3) / 6
    vector[3 + size] = 1
    vector[5 + material] = 1
    vector[7 + shape] = 1
    vector[10 + colour] = 1
    vector[18] = flag
    return vector


PADDING = np.zeros(19)
RED_CUBE = dict(x=-1.0, y=2.0, size=0, material=1, shape=0, colour=4)
BLUE_SPHERE = dict(x=1.5, y=-0.5, size=1, material=0, shape=1, colour=2)


def _targets() -> np.ndarray:
    """One image: two real objects and one padding row, shape (1, 3, 19)."""
    return np.stack([_object(**RED_CUBE), _object(**BLUE_SPHERE), PADDING])[None]


def _ap_at_every_threshold(predictions: np.ndarray, targets: np.ndarray) -> list[float]:
    return [average_precision(predictions, targets, threshold) for threshold in AP_THRESHOLDS]


def test_perfect_predictions_score_one_at_every_threshold() -> None:
    targets = _targets()
    predictions = targets.copy()  # the padding row predicts confidence 0
    assert _ap_at_every_threshold(predictions, targets) == [1.0] * 5
    # Torch tensors, more predicted slots than targets, and scores instead of one-hots are all fine.
    scores = torch.as_tensor(np.concatenate([targets, PADDING[None, None]], axis=1))
    scores[..., 3:] = scores[..., 3:] * 0.8 + 0.05
    assert _ap_at_every_threshold(scores, torch.as_tensor(targets)) == [1.0] * 5


def test_wrong_colour_is_a_miss() -> None:
    wrong = dict(BLUE_SPHERE, colour=3)
    predictions = np.stack([_object(**RED_CUBE, flag=0.9), _object(**wrong, flag=0.8), PADDING])[None]
    # TP then FP: recall 0.5 at precision 1, never 1.0.
    assert _ap_at_every_threshold(predictions, _targets()) == [0.5] * 5


@pytest.mark.parametrize("attribute", ["size", "material", "shape"])
def test_any_wrong_discrete_attribute_is_a_miss(attribute: str) -> None:
    wrong = dict(BLUE_SPHERE, **{attribute: 0 if BLUE_SPHERE[attribute] else 1})
    predictions = np.stack([_object(**RED_CUBE, flag=0.9), _object(**wrong, flag=0.8)])[None]
    assert average_precision(predictions, _targets(), math.inf) == 0.5


def test_position_beyond_threshold_is_a_miss() -> None:
    shifted = dict(BLUE_SPHERE, x=BLUE_SPHERE["x"] + 0.3)  # 0.3 CLEVR units away
    predictions = np.stack([_object(**RED_CUBE, flag=0.9), _object(**shifted, flag=0.8), PADDING])[None]
    # thresholds inf, 1, 0.5 accept the shifted object; 0.25 and 0.125 do not.
    assert _ap_at_every_threshold(predictions, _targets()) == [1.0, 1.0, 1.0, 0.5, 0.5]


def test_duplicate_prediction_is_one_false_positive() -> None:
    predictions = np.stack(
        [_object(**RED_CUBE, flag=0.9), _object(**RED_CUBE, flag=0.8), _object(**BLUE_SPHERE, flag=0.7)]
    )[None]
    # TP, FP, TP: recall 0.5 at precision 1, then recall 1 at precision 2/3.
    expected = 0.5 * 1.0 + 0.5 * np.float32(2 / 3)
    assert average_precision(predictions, _targets(), math.inf) == pytest.approx(expected, abs=1e-7)
    # Ranked last, the duplicate costs nothing: recall is already 1 when it comes.
    predictions[0, 1, 18] = 0.1
    assert average_precision(predictions, _targets(), math.inf) == 1.0


def test_ranking_is_by_confidence_over_the_whole_batch() -> None:
    targets = np.concatenate([_targets(), _targets()])  # (2, 3, 19): 4 real objects
    wrong = dict(RED_CUBE, colour=0)
    predictions = np.stack(
        [
            np.stack([_object(**RED_CUBE, flag=0.6), _object(**BLUE_SPHERE, flag=0.5), PADDING]),
            np.stack(
                [_object(**wrong, flag=0.95), _object(**BLUE_SPHERE, flag=0.4), _object(**RED_CUBE, flag=0.3)]
            ),
        ]
    )
    # Order: FP (0.95), TP, TP, TP, TP, then the two padding FPs: precision 0, 1/2, 2/3, 3/4, 4/5.
    # Made monotone from the right every recall step of 0.25 gets precision 4/5.
    expected = 4 * 0.25 * np.float32(4 / 5)
    assert average_precision(predictions, targets, 1.0) == pytest.approx(expected, abs=1e-7)


def test_no_fallback_to_second_nearest_object() -> None:
    near = dict(RED_CUBE)
    far = dict(RED_CUBE, x=RED_CUBE["x"] + 0.8)  # same attributes, 0.8 units away
    targets = np.stack([_object(**near), _object(**far)])[None]
    # Both predictions sit at the near object: the second one is a FP even though the far object
    # is within the threshold (reference behaviour).
    predictions = np.stack([_object(**near, flag=0.9), _object(**near, flag=0.8)])[None]
    assert average_precision(predictions, targets, 1.0) == 0.5
    # A prediction between them (0.3 from near, 0.5 from far) goes to the nearest (near).
    between = dict(RED_CUBE, x=RED_CUBE["x"] + 0.3)
    predictions = np.stack([_object(**between, flag=0.9), _object(**far, flag=0.8)])[None]
    assert average_precision(predictions, targets, 0.4) == 1.0
    # At 0.25 the first detection is a FP and the second a TP: precision 1/2 at recall 1/2.
    assert average_precision(predictions, targets, 0.25) == 0.25


def test_minus_one_means_any_distance() -> None:
    shifted = dict(BLUE_SPHERE, x=BLUE_SPHERE["x"] + 2.5)
    predictions = np.stack([_object(**RED_CUBE, flag=0.9), _object(**shifted, flag=0.8)])[None]
    assert average_precision(predictions, _targets(), -1) == average_precision(
        predictions, _targets(), math.inf
    )
    assert average_precision(predictions, _targets(), math.inf) == 1.0
    assert average_precision(predictions, _targets(), 1.0) == 0.5


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="no real object"):
        average_precision(np.zeros((1, 2, 19)), np.zeros((1, 2, 19)), 1.0)
    with pytest.raises(ValueError, match=r"predictions must have shape \(B, K, 19\)"):
        average_precision(np.zeros((1, 2, 18)), _targets(), 1.0)
    with pytest.raises(ValueError, match="batch sizes"):
        average_precision(np.zeros((2, 3, 19)), _targets(), 1.0)
    with pytest.raises(ValueError, match="distance_threshold"):
        average_precision(_targets(), _targets(), -0.5)


def _loop_reference(pred: np.ndarray, true: np.ndarray, threshold: float) -> float:
    """A literal loop transcription of the reference algorithm (independent of the vectorised code)."""
    num_pred = pred.shape[1]
    flat = pred.reshape(-1, 19)
    order = sorted(range(len(flat)), key=lambda i: (flat[i, -1], i), reverse=True)

    def attributes(v: np.ndarray) -> list[int]:
        return [int(v[3:5].argmax()), int(v[5:7].argmax()), int(v[7:10].argmax()), int(v[10:18].argmax())]

    tp, fp, taken = [], [], set()
    for i in order:
        image = i // num_pred
        best, best_id = 10000.0, None
        for j, target in enumerate(true[image]):
            if target[18] and attributes(target) == attributes(flat[i]):
                distance = float(np.linalg.norm((target[:3] - flat[i, :3]) * 6.0))
                if distance < best:
                    best, best_id = distance, j
        hit = best_id is not None and (threshold == -1 or best < threshold) and (image, best_id) not in taken
        if hit:
            taken.add((image, best_id))
        tp.append(1.0 if hit else 0.0)
        fp.append(0.0 if hit else 1.0)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = [0.0, *(ctp / true[:, :, -1].sum()).astype(np.float32).tolist(), 1.0]
    precision = [0.0, *(ctp / (ctp + cfp)).astype(np.float32).tolist(), 0.0]
    for k in range(len(precision) - 1, 0, -1):
        precision[k - 1] = max(precision[k - 1], precision[k])
    return sum(precision[k + 1] * (recall[k + 1] - recall[k]) for k in range(len(recall) - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_match_a_loop_transcription_of_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = np.zeros((6, 5, 19))
    for b in range(6):
        for k in range(rng.integers(1, 6)):
            targets[b, k] = _object(
                *rng.uniform(-3, 3, 2), rng.integers(2), rng.integers(2), rng.integers(3), rng.integers(2)
            )
    # Predictions: shuffled targets with position noise, some attribute errors and random confidences.
    predictions = targets[:, rng.permutation(5)] + np.concatenate(
        [rng.normal(0, 0.04, (6, 5, 3)), np.zeros((6, 5, 16))], axis=-1
    )
    flip = rng.random((6, 5)) < 0.2
    predictions[flip, 10:18] = rng.random((flip.sum(), 8))
    predictions[..., 18] = rng.random((6, 5))
    for threshold in AP_THRESHOLDS:
        expected = _loop_reference(predictions, targets, -1 if math.isinf(threshold) else threshold)
        assert average_precision(predictions, targets, threshold) == pytest.approx(expected, abs=1e-12)
