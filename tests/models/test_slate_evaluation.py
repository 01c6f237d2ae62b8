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
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "masks": torch.zeros(2, 16, 16)}


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
        "mse_autoregressive",
        "mse_autoregressive_sampled",
        "cross_entropy",
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
    assert metrics["mse_autoregressive"] > 0 and metrics["cross_entropy"] > 0
    assert metrics["proxy_feature_distance"] >= 0
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


def test_evaluator_rejects_other_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs a Slate model"):
        get_evaluator("slate")(
            torch.nn.Linear(1, 1), ImageList(torch.rand(2, 3, 16, 16)), EvaluationOptions(tmp_path)
        )  # type: ignore[arg-type]
