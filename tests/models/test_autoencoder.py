"""The slot-attention autoencoder: shapes, masks, training under every variant, gradients, evaluator."""

from pathlib import Path

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_training_lowers_loss
from torch.utils.data import default_collate

from implicit_slots.config import load_config
from implicit_slots.data import build_dataset
from implicit_slots.evaluation import EvaluationOptions, get_evaluator
from implicit_slots.metrics import adjusted_rand_index
from implicit_slots.models import get_model_spec
from implicit_slots.models.autoencoder import AutoencoderConfig, AutoencoderOutput, build_autoencoder
from implicit_slots.slot_attention import SlotAttentionConfig

VARIANTS = ("vanilla", "IN", "IB", "BN", "BB")
CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("autoencoder_*.yaml"))


def _tiny_config(variant: str = "IN", image_size: int = 16, initial_size: int = 8) -> AutoencoderConfig:
    return AutoencoderConfig(
        image_size=image_size,
        encoder_channels=8,
        encoder_kernel_size=3,
        num_encoder_layers=2,
        decoder_channels=8,
        decoder_initial_size=initial_size,
        decoder_hidden_layers=1,
        decoder_kernel_size=3,
        slot_attention=SlotAttentionConfig(num_slots=3, slot_dim=16, mlp_hidden_dim=16, variant=variant),
    )


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    dataset = build_dataset("sprites", split="train", image_size=16, seed=0, num_samples=6, max_objects=2)
    return default_collate([dataset[i] for i in range(6)])


def test_registered_and_built_from_the_registry(batch: dict[str, torch.Tensor]) -> None:
    spec = get_model_spec("autoencoder")
    assert spec.config_type is AutoencoderConfig
    model = spec.build(_tiny_config())
    assert isinstance(model(batch), AutoencoderOutput)


@pytest.mark.parametrize("initial_size", [16, 4])
def test_output_shapes_and_masks_sum_to_one(batch: dict[str, torch.Tensor], initial_size: int) -> None:
    model = build_autoencoder(_tiny_config(initial_size=initial_size))
    output = model(batch)
    assert output.reconstruction.shape == (6, 3, 16, 16)
    assert output.slot_reconstructions.shape == (6, 3, 3, 16, 16)
    assert output.masks.shape == (6, 3, 16, 16)
    assert output.slot_attention.slots.shape == (6, 3, 16)
    assert output.slot_attention.attention.shape == (6, 16 * 16, 3)
    torch.testing.assert_close(output.masks.sum(dim=1), torch.ones(6, 16, 16))
    assert (output.masks >= 0).all()
    # The reconstruction is the mask-weighted sum of the slot reconstructions.
    mixed = (output.masks.unsqueeze(2) * output.slot_reconstructions).sum(dim=1)
    torch.testing.assert_close(output.reconstruction, mixed)


def test_loss_is_locatello_mse_on_minus_one_one_scale(batch: dict[str, torch.Tensor]) -> None:
    model = build_autoencoder(_tiny_config())
    output = model(batch)
    loss = model.compute_loss(output, batch)
    expected = ((2 * batch["image"] - 1) - (2 * output.reconstruction - 1)).pow(2).mean()
    torch.testing.assert_close(loss.loss, expected)
    per_image = (batch["image"] - output.reconstruction).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(loss.terms["per_image_squared_error"], per_image)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_lowers_the_loss_on_a_fixed_batch(batch: dict[str, torch.Tensor], variant: str) -> None:
    assert_training_lowers_loss(build_autoencoder(_tiny_config(variant)), batch)


def test_every_parameter_gets_a_gradient_under_vanilla(batch: dict[str, torch.Tensor]) -> None:
    assert_every_parameter_gets_a_gradient(build_autoencoder(_tiny_config("vanilla")), batch)


def test_visualise_returns_image_strips(batch: dict[str, torch.Tensor]) -> None:
    model = build_autoencoder(_tiny_config())
    output = model(batch)
    images = model.visualise(output, batch)
    assert set(images) == {"reconstruction", "masks", "attention"}
    assert images["reconstruction"].shape == (6, 3, 16, 6 * 16 + 5 * 2)  # input, recon, segmentation, 3 slots
    assert images["masks"].shape == (6, 3, 16, 3 * 16 + 2 * 2)
    for image in images.values():
        assert image.min() >= 0 and image.max() <= 1


def test_bad_configuration_and_input_raise(batch: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"image_size \(24\) must be decoder_initial_size \(16\)"):
        build_autoencoder(_tiny_config(image_size=24, initial_size=16))
    model = build_autoencoder(_tiny_config())
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\) \(model.image_size\)"):
        model({"image": torch.rand(2, 3, 32, 32)})


def test_evaluator_reports_ari_and_writes_the_masks_figure(tmp_path: Path) -> None:
    dataset = build_dataset("sprites", split="test", image_size=16, seed=0, num_samples=5, max_objects=2)
    model = build_autoencoder(_tiny_config())
    options = EvaluationOptions(out_dir=tmp_path, batch_size=2, max_images=4)
    report = get_evaluator("autoencoder")(model, dataset, options)
    assert report.metrics["num_images"] == 4
    assert set(report.metrics) == {
        "ari",
        "fg_ari",
        "fg_ari_attention",
        "mse",
        "per_image_squared_error",
        "num_images",
    }
    assert -1 <= report.metrics["fg_ari"] <= 1
    # The evaluator's FG-ARI is the mean of the per-image metric, with the same slot noise (seed 0).
    torch.manual_seed(options.seed)
    scores = []
    with torch.no_grad():
        for start in (0, 2):
            batch = default_collate([dataset[i] for i in range(start, start + 2)])
            scores.append(adjusted_rand_index(batch["masks"], model(batch).masks, exclude_background=True))
    assert report.metrics["fg_ari"] == pytest.approx(float(torch.cat(scores).mean()), abs=1e-9)
    assert report.figures == [tmp_path / "autoencoder_masks.png"]
    assert report.figures[0].stat().st_size > 1000


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_files_load_and_build(path: Path) -> None:
    config = load_config(path)
    assert config.model.name == "autoencoder"
    assert config.model.config.image_size == config.data.image_size
    model = get_model_spec("autoencoder").build(config.model.config)
    assert model.slot_attention.num_slots == config.model.config.slot_attention.num_slots
