"""SLATE autoregressive reconstruction: the key/value cache changes nothing but the speed."""

from __future__ import annotations

import pytest
import torch

from implicit_slots.fixed_point.variants import VARIANTS
from implicit_slots.models.slate import SlateConfig, build_slate
from implicit_slots.slot_attention import SlotAttentionConfig


def tiny_model(variant: str = "IN", num_heads: int = 2, num_blocks: int = 2) -> torch.nn.Module:
    slot_attention = SlotAttentionConfig(
        num_slots=3, slot_dim=16, mlp_hidden_dim=16, num_iterations=2, variant=variant
    )
    config = SlateConfig(
        image_size=24,
        vocab_size=20,
        dvae_hidden_channels=8,
        d_model=16,
        num_heads=num_heads,
        num_decoder_blocks=num_blocks,
        slot_attention=slot_attention,
    )
    return build_slate(config).double().eval()


@pytest.mark.parametrize("num_heads,num_blocks", [(2, 2), (1, 1), (4, 3)])
def test_cached_greedy_generation_equals_uncached(num_heads: int, num_blocks: int) -> None:
    model = tiny_model(num_heads=num_heads, num_blocks=num_blocks)
    slots = torch.randn(3, 3, 16, dtype=torch.float64)
    cached = model.generate_tokens(slots)
    uncached = model.generate_tokens(slots, use_cache=False)
    assert cached.shape == (3, 36)
    assert torch.equal(cached, uncached)
    # Not a degenerate sequence: the random model emits several different tokens.
    assert cached.unique().numel() > 3


def test_cached_sampling_equals_uncached_with_the_same_generator() -> None:
    model = tiny_model()
    slots = torch.randn(4, 3, 16, dtype=torch.float64)
    first = model.generate_tokens(slots, sample=True, generator=torch.Generator().manual_seed(3))
    second = model.generate_tokens(
        slots, use_cache=False, sample=True, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(first, second)
    other = model.generate_tokens(slots, sample=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(first, other)
    greedy = model.generate_tokens(slots)
    assert not torch.equal(first, greedy)


def test_cached_logits_equal_teacher_forced_logits() -> None:
    # Feeding the greedy tokens back with teacher forcing reproduces the argmax at every position.
    model = tiny_model()
    slots = torch.randn(2, 3, 16, dtype=torch.float64)
    tokens = model.generate_tokens(slots)
    hidden = model.decoder(model.embed_tokens(tokens)[:, :-1], model.slot_projection(slots))
    assert torch.equal(model.token_head(hidden).argmax(-1), tokens)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reconstruct_autoregressive_with_every_variant(variant: str) -> None:
    model = tiny_model(variant)
    image = torch.rand(2, 3, 24, 24, dtype=torch.float64)
    result = model.reconstruct_autoregressive(image, generator=torch.Generator().manual_seed(0))
    again = model.reconstruct_autoregressive(
        image, use_cache=False, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(result.tokens, again.tokens)
    assert result.image.shape == (2, 3, 24, 24)
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert torch.equal(result.input_tokens, model.encode_image_tokens(image))
    torch.testing.assert_close(result.image, model.decode_image_tokens(result.tokens))


def test_generation_refuses_train_mode_and_bad_lengths() -> None:
    model = tiny_model()
    slots = torch.randn(1, 3, 16, dtype=torch.float64)
    assert model.generate_tokens(slots, num_tokens=5).shape == (1, 5)
    with pytest.raises(ValueError, match=r"num_tokens must be in \[1, 36\], got 37"):
        model.generate_tokens(slots, num_tokens=37)
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        model.generate_tokens(slots)
