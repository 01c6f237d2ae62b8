"""bf16 autocast on CPU: noise is drawn in float32, and every model trains with losses close to fp32."""

from collections.abc import Callable

import pytest
import torch
from torch.utils.data import default_collate

from implicit_slots.data import build_dataset
from implicit_slots.models import ObjectCentricModel
from implicit_slots.models.autoencoder import AutoencoderConfig, build_autoencoder
from implicit_slots.models.set_prediction import SetPredictionConfig, build_set_prediction
from implicit_slots.models.slate import SlateConfig, build_slate
from implicit_slots.models.slate.dvae import sample_gumbel_tokens
from implicit_slots.slot_attention import GaussianSlotInitializer, SlotAttentionConfig


def test_gumbel_noise_is_drawn_in_float32_whatever_the_logits_dtype() -> None:
    logits = torch.zeros(2, 4, 4, 512)  # the sample is the noise itself
    torch.manual_seed(0)
    reference = sample_gumbel_tokens(logits, 1.0)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sample_gumbel_tokens(logits.to(torch.bfloat16), 1.0)
    assert low.soft.dtype == torch.float32
    torch.testing.assert_close(low.soft, reference.soft, rtol=0, atol=0)
    assert torch.equal(low.tokens, reference.tokens)
    # bf16 uniforms would take about a thousand distinct values; float32 ones are nearly all distinct.
    assert reference.soft.unique().numel() > 0.9 * reference.soft.numel()


def test_initial_slot_noise_is_drawn_in_float32_for_bf16_parameters() -> None:
    initializer = GaussianSlotInitializer(16)
    with torch.no_grad():  # values exact in bf16, so only the noise's precision can differ
        initializer.mu.fill_(0.5)
        initializer.log_sigma.zero_()
    torch.manual_seed(0)
    reference = initializer(4, 3)
    torch.manual_seed(0)
    low = initializer.to(torch.bfloat16)(4, 3)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low, reference.to(torch.bfloat16), rtol=0, atol=0)


def _batch(name: str) -> dict[str, torch.Tensor]:
    if name == "set_prediction":
        dataset = build_dataset(
            "clevr-lite", split="train", image_size=16, seed=0, num_samples=4, min_objects=2, max_objects=3
        )
    else:
        dataset = build_dataset("sprites", split="train", image_size=16, seed=0, num_samples=4, max_objects=2)
    return default_collate([dataset[i] for i in range(4)])


MODELS: dict[str, Callable[[], ObjectCentricModel]] = {
    "slate": lambda: build_slate(
        SlateConfig(
            image_size=16,
            vocab_size=32,
            dvae_hidden_channels=8,
            d_model=32,
            num_heads=2,
            num_decoder_blocks=1,
            dropout=0.0,  # dropout masks would differ between dtypes; not what this test is about
            attention_dropout=0.0,
            slot_attention=SlotAttentionConfig(num_slots=3, slot_dim=32, mlp_hidden_dim=32, num_iterations=3),
        )
    ),
    "autoencoder": lambda: build_autoencoder(
        AutoencoderConfig(
            image_size=16,
            encoder_channels=8,
            encoder_kernel_size=3,
            num_encoder_layers=2,
            decoder_channels=8,
            decoder_initial_size=8,
            decoder_hidden_layers=1,
            decoder_kernel_size=3,
            slot_attention=SlotAttentionConfig(num_slots=3, slot_dim=16, mlp_hidden_dim=16),
        )
    ),
    "set_prediction": lambda: build_set_prediction(
        SetPredictionConfig(
            encoder_channels=8,
            encoder_kernel_size=3,
            encoder_strides=[1, 2],
            head_hidden_dim=16,
            slot_attention=SlotAttentionConfig(num_slots=4, slot_dim=16, mlp_hidden_dim=16),
        )
    ),
}


def _train(name: str, autocast: bool, steps: int = 4) -> list[float]:
    torch.manual_seed(0)
    model = MODELS[name]().train()
    batch = _batch(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model.compute_loss(model(batch), batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_trains_under_bf16_autocast_close_to_float32(name: str) -> None:
    reference, low = _train(name, autocast=False), _train(name, autocast=True)
    assert all(torch.isfinite(torch.tensor(low)))
    torch.testing.assert_close(torch.tensor(low), torch.tensor(reference), rtol=0.05, atol=1e-3)
