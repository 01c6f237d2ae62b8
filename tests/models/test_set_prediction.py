"""Set prediction: shapes, the Hungarian-Huber loss, training under every variant, gradients, evaluator."""

import math
from pathlib import Path

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_training_lowers_loss
from torch.utils.data import default_collate

from implicit_slots.config import load_config
from implicit_slots.data import build_dataset
from implicit_slots.evaluation import EvaluationOptions, get_evaluator
from implicit_slots.metrics import average_precision, hungarian_huber_loss
from implicit_slots.models import get_model_spec
from implicit_slots.models.set_prediction import (
    SetPredictionConfig,
    SetPredictionOutput,
    build_set_prediction,
)
from implicit_slots.slot_attention import SlotAttentionConfig

VARIANTS = ("vanilla", "IN", "IB", "BN", "BB")
CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("set_prediction_*.yaml"))


def _tiny_config(variant: str = "IN") -> SetPredictionConfig:
    return SetPredictionConfig(
        encoder_channels=8,
        encoder_kernel_size=3,
        encoder_strides=[1, 2],
        head_hidden_dim=16,
        slot_attention=SlotAttentionConfig(num_slots=4, slot_dim=16, mlp_hidden_dim=16, variant=variant),
    )


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    dataset = build_dataset(
        "clevr-lite", split="train", image_size=16, seed=0, num_samples=4, min_objects=2, max_objects=3
    )
    return default_collate([dataset[i] for i in range(4)])


def test_registered_with_locatello_defaults() -> None:
    spec = get_model_spec("set_prediction")
    assert spec.config_type is SetPredictionConfig
    defaults = SetPredictionConfig()
    assert defaults.slot_attention.num_slots == 10 and defaults.encoder_strides == [1, 2, 2, 1]


def test_output_shapes_and_range(batch: dict[str, torch.Tensor]) -> None:
    model = build_set_prediction(_tiny_config())
    output = model(batch)
    assert isinstance(output, SetPredictionOutput)
    assert output.predictions.shape == (4, 4, 19)
    assert ((output.predictions > 0) & (output.predictions < 1)).all()  # sigmoid outputs
    assert output.slot_attention.attention.shape == (4, 8 * 8, 4)
    torch.testing.assert_close(output.slot_attention.attention.sum(-1), torch.ones(4, 64))


def test_loss_is_hungarian_huber(batch: dict[str, torch.Tensor]) -> None:
    model = build_set_prediction(_tiny_config())
    output = model(batch)
    loss = model.compute_loss(output, batch)
    torch.testing.assert_close(loss.loss, hungarian_huber_loss(output.predictions, batch["properties"]))
    assert set(loss.terms) == {"hungarian_huber"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_lowers_the_loss_on_a_fixed_batch(batch: dict[str, torch.Tensor], variant: str) -> None:
    assert_training_lowers_loss(build_set_prediction(_tiny_config(variant)), batch)


def test_every_parameter_gets_a_gradient_under_vanilla(batch: dict[str, torch.Tensor]) -> None:
    assert_every_parameter_gets_a_gradient(build_set_prediction(_tiny_config("vanilla")), batch)


def test_visualise_returns_attention_strips(batch: dict[str, torch.Tensor]) -> None:
    model = build_set_prediction(_tiny_config())
    images = model.visualise(model(batch), batch)
    assert images["attention"].shape == (4, 3, 16, 5 * 16 + 4 * 2)  # input + 4 slots


def test_errors_name_the_problem(batch: dict[str, torch.Tensor]) -> None:
    model = build_set_prediction(_tiny_config())
    output = model(batch)
    with pytest.raises(KeyError, match="needs batch\\['properties'\\]"):
        model.compute_loss(output, {"image": batch["image"]})
    with pytest.raises(ValueError, match="5 target objects but only 4 slots"):
        model.compute_loss(output, {"image": batch["image"], "properties": torch.zeros(4, 5, 19)})
    with pytest.raises(ValueError, match="divisible by 2"):
        model({"image": torch.rand(1, 3, 15, 15)})


def test_evaluator_reports_ap_at_every_threshold_and_writes_a_table(tmp_path: Path) -> None:
    dataset = build_dataset(
        "clevr-lite", split="test", image_size=16, seed=0, num_samples=4, min_objects=2, max_objects=3
    )
    model = build_set_prediction(_tiny_config())
    options = EvaluationOptions(out_dir=tmp_path, batch_size=3, seed=5)
    report = get_evaluator("set_prediction")(model, dataset, options)
    names = ["ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"]
    assert list(report.metrics) == [*names, "hungarian_huber", "num_images"]
    assert report.metrics["num_images"] == 4
    # Recompute AP at inf with the same slot noise.
    torch.manual_seed(5)
    with torch.no_grad():
        predictions = torch.cat(
            [
                model(default_collate([dataset[i] for i in indices])).predictions
                for indices in ([0, 1, 2], [3])
            ]
        )
    targets = torch.stack([dataset[i]["properties"] for i in range(4)])
    assert report.metrics["ap_inf"] == pytest.approx(average_precision(predictions, targets, math.inf))
    table = report.figures[0].read_text()
    assert report.figures[0].name == "set_prediction_objects.md"
    assert table.count("\n| ") == int(targets[..., -1].sum()) + 1  # header + one row per real object


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_files_load_and_build(path: Path) -> None:
    config = load_config(path)
    assert config.model.name == "set_prediction"
    model = get_model_spec("set_prediction").build(config.model.config)
    assert model.slot_attention.num_slots == config.model.config.slot_attention.num_slots


def test_every_slot_is_matched_and_padded_rows_are_no_object() -> None:
    """Hand-built: 3 slots, 2 real objects. Slots 0 and 2 predict the objects exactly; slot 1 predicts a
    third object with confidence 1. Without padding slot 1 would get no loss; with it, slot 1 is matched to
    a zero row, so its whole cost (its confidence included) is the loss and its gradient lowers the
    confidence."""
    model = build_set_prediction(_tiny_config())
    objects = torch.zeros(1, 2, 19)
    objects[0, 0, [0, 1, 2, 3, 5, 7, 10, 18]] = torch.tensor([0.2, 0.3, 0.1, 1, 1, 1, 1, 1])
    objects[0, 1, [0, 1, 2, 4, 6, 9, 12, 18]] = torch.tensor([0.7, 0.6, 0.1, 1, 1, 1, 1, 1])
    intruder = torch.zeros(19)
    intruder[[0, 1, 2, 3, 6, 8, 15, 18]] = torch.tensor([0.5, 0.5, 0.1, 1, 1, 1, 1, 1])
    predictions = torch.stack([objects[0, 1], intruder, objects[0, 0]]).unsqueeze(0).requires_grad_(True)
    output = SetPredictionOutput(
        slot_attention=model({"image": torch.rand(1, 3, 16, 16)}).slot_attention, predictions=predictions
    )
    loss = model.compute_loss(output, {"image": torch.rand(1, 3, 16, 16), "properties": objects}).loss
    no_object_cost = (0.5 * intruder.square()).mean()  # Huber (|x| <= 1) against the all-zero row
    torch.testing.assert_close(loss, no_object_cost)
    loss.backward()
    assert predictions.grad is not None
    assert (predictions.grad[0, 1].abs() > 0).any()  # the spare slot is matched
    assert predictions.grad[0, 1, 18] > 0  # gradient descent lowers its confidence ("no object")
    assert predictions.grad[0, [0, 2]].abs().sum() == 0  # exact predictions: zero cost, zero gradient
