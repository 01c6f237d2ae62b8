"""The SLATE evaluator: metrics on a tiny model and the figure grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from implicit_slots.evaluation import EvaluationOptions, get_evaluator
from implicit_slots.metrics import per_image_squared_error
from implicit_slots.models.slate import SlateConfig, build_slate
from implicit_slots.slot_attention import SlotAttentionConfig


class ImageList(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.masks is None:
            return {"image": self.images[index]}
        return {"image": self.images[index], "masks": self.masks[index]}


def tiny_model() -> torch.nn.Module:
    slot_attention = SlotAttentionConfig(num_slots=3, slot_dim=16, mlp_hidden_dim=16, num_iterations=2)
    config = SlateConfig(
        image_size=16,
        vocab_size=12,
        dvae_hidden_channels=8,
        d_model=16,
        num_heads=2,
        num_decoder_blocks=1,
        slot_attention=slot_attention,
    )
    return build_slate(config)


def test_evaluator_writes_metrics_and_figure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    images = torch.rand(7, 3, 16, 16)
    options = EvaluationOptions(out_dir=tmp_path, split="val", batch_size=3, max_images=5)
    report = get_evaluator("slate")(model, ImageList(images), options)
    metrics = report.metrics
    assert set(metrics) == {
        "mse_dvae",
        "mse_background",
        "mse_autoregressive",
        "mse_autoregressive_sampled",
        "cross_entropy",
        "cross_entropy_shuffled_slots",
        "slot_information",
        "relative_residual",
        "proxy_feature_distance",
        "num_images",
    }
    assert "fid" not in metrics  # no weights given: never called FID
    assert metrics["num_images"] == 5
    # mse_dvae is SLATE's per-image sum over the first 5 images, of the clamped argmax-token reconstruction.
    model.eval()
    with torch.no_grad():
        tokens = model.encode_image_tokens(images[:5])
        expected = per_image_squared_error(images[:5], model.decode_image_tokens(tokens)).mean()
    assert metrics["mse_dvae"] == pytest.approx(float(expected), rel=1e-5)
    # mse_background: the decoding of the split's most frequent argmax token everywhere.
    with torch.no_grad():
        background_token = int(torch.bincount(tokens.flatten(), minlength=12).argmax())
        background = model.decode_image_tokens(torch.full_like(tokens, background_token))  # (5, 3, H, W)
    expected_background = per_image_squared_error(images[:5], background).mean()
    assert metrics["mse_background"] == pytest.approx(float(expected_background), rel=1e-5)
    assert metrics["mse_autoregressive"] > 0 and metrics["cross_entropy"] > 0
    # Same seed, same numbers.
    again = get_evaluator("slate")(model, ImageList(images), options).metrics
    assert again == metrics
    # The figure: 3 rows (the first batch) x (input, dVAE, greedy, sampled, 3 slot masks) columns.
    (figure,) = report.figures
    assert figure == tmp_path / "slate_val.png"
    with Image.open(figure) as opened:
        width, height = opened.size
    assert width == 7 * (32 + 2) + 2
    assert height == 14 + 3 * (32 + 2) + 2


def test_shuffled_slots_cross_entropy(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = tiny_model()
    with torch.no_grad():  # sigma ~ 0: the initial slots, hence the slots, do not depend on the seed
        model.slot_attention.initializer.log_sigma.fill_(-40.0)
        model.slot_attention.initializer.mu.normal_()
    images = torch.rand(5, 3, 16, 16)
    options = EvaluationOptions(out_dir=tmp_path, split="val", batch_size=3)
    metrics = get_evaluator("slate")(model, ImageList(images), options).metrics
    # Each batch (3 + 2 images) is decoded with its slots shifted by one image.
    loss = torch.nn.functional.cross_entropy
    own_total, shifted_total = 0.0, 0.0
    with torch.no_grad():
        for part in (images[:3], images[3:]):
            output = model({"image": part})
            own = model.token_logits(output.tokens, output.slot_attention.slots)
            torch.testing.assert_close(own, output.logits)  # own slots: the forward pass's logits
            shifted = model.token_logits(output.tokens, output.slot_attention.slots.roll(1, dims=0))
            own_total += float(loss(own.flatten(0, 1), output.tokens.flatten(), reduction="sum"))
            shifted_total += float(loss(shifted.flatten(0, 1), output.tokens.flatten(), reduction="sum"))
    assert metrics["cross_entropy"] == pytest.approx(own_total / 5, rel=1e-5)
    assert metrics["cross_entropy_shuffled_slots"] == pytest.approx(shifted_total / 5, rel=1e-5)
    assert metrics["slot_information"] == pytest.approx((shifted_total - own_total) / 5, abs=1e-3)
    assert metrics["slot_information"] != 0.0  # an untrained decoder still reads its slots


def test_evaluator_rejects_other_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs a Slate model"):
        get_evaluator("slate")(
            torch.nn.Linear(1, 1), ImageList(torch.rand(2, 3, 16, 16)), EvaluationOptions(tmp_path)
        )  # type: ignore[arg-type]


def test_attention_ari_scores_the_slot_masks_against_the_true_segmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    masks = torch.zeros(4, 3, 16, 16)  # background + two objects on 4x4 patches
    masks[:, 1, 0:4, 0:8] = 1
    masks[:, 2, 8:16, 12:16] = 1
    masks[:, 0] = 1 - masks[:, 1:].sum(dim=1)
    dataset = ImageList(torch.rand(4, 3, 16, 16), masks)
    options = EvaluationOptions(out_dir=tmp_path, split="val", batch_size=4)
    metrics = get_evaluator("slate")(model, dataset, options).metrics
    assert -1.0 <= metrics["ari_attention"] <= 1.0 and -1.0 <= metrics["fg_ari_attention"] <= 1.0
    assert metrics["num_images"] == 4
    perfect = masks.flip(1)  # the slots in another order: ARI ignores labels
    monkeypatch.setattr(model, "attention_masks", lambda attention: perfect[: attention.shape[0]])
    metrics = get_evaluator("slate")(model, dataset, options).metrics
    assert (metrics["ari_attention"], metrics["fg_ari_attention"]) == pytest.approx((1.0, 1.0))
    one_slot = torch.zeros(4, 3, 16, 16)
    one_slot[:, 1] = 1  # every pixel in one slot: both objects merged
    monkeypatch.setattr(model, "attention_masks", lambda attention: one_slot[: attention.shape[0]])
    metrics = get_evaluator("slate")(model, dataset, options).metrics
    assert (metrics["ari_attention"], metrics["fg_ari_attention"]) == pytest.approx((0.0, 0.0))
