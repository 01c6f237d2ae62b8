"""SLATE model: architecture against official SLATE, gradient blocking, losses, variants, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from implicit_slots.fixed_point.variants import VARIANTS
from implicit_slots.models import get_model_spec
from implicit_slots.models.slate import (
    Slate,
    SlateConfig,
    SlateOutput,
    build_slate,
    sample_gumbel_tokens,
    transformer,
)
from implicit_slots.models.slate.dvae import DiscreteVAE
from implicit_slots.models.slate.model import sinusoidal_2d_positions
from implicit_slots.models.slate.transformer import _chunked_causal_attention, causal_attention
from implicit_slots.slot_attention import SlotAttention, SlotAttentionConfig


def tiny_config(variant: str = "vanilla", **changes: object) -> SlateConfig:
    slot_attention = SlotAttentionConfig(
        num_slots=3, slot_dim=16, mlp_hidden_dim=16, num_iterations=2, variant=variant
    )
    config = SlateConfig(
        image_size=16,
        vocab_size=12,
        dvae_hidden_channels=8,
        d_model=16,
        num_heads=2,
        num_decoder_blocks=2,
        dropout=0.0,
        attention_dropout=0.0,
        slot_attention=slot_attention,
    )
    return dataclasses.replace(config, **changes)


def test_default_config_matches_official_slate_parameter_counts() -> None:
    # Counts of the official SLATE model at train.py defaults, 64x64 (reference/slate-baseline.md).
    model = build_slate(SlateConfig())

    def count(*modules: torch.nn.Module) -> int:
        return sum(p.numel() for module in modules for p in module.parameters())

    assert count(model.dvae) == 285_635
    assert count(model.decoder) == 2_368_128
    assert count(model.slot_attention, model.input_norm, model.input_mlp) == 483_072
    assert count(model.token_embedding) == 196_800
    assert model.position_embedding.numel() == 49_344
    assert count(model.slot_projection) == 36_864
    assert count(model.token_head) == 196_608
    assert count(model) == 3_616_451
    assert model.slot_attention.num_iterations == 7 and model.slot_attention.variant == "IN"


def test_registered_under_slate() -> None:
    spec = get_model_spec("slate")
    assert spec.config_type is SlateConfig and spec.build is build_slate


def test_forward_shapes_and_eval_is_deterministic() -> None:
    model = build_slate(tiny_config())
    image = torch.rand(2, 3, 16, 16)
    output = model({"image": image})
    assert isinstance(output, SlateOutput)
    assert output.logits.shape == (2, 16, 12)
    assert output.tokens.shape == (2, 16) and output.tokens.dtype == torch.long
    assert output.dvae_reconstruction.shape == (2, 3, 16, 16)
    assert output.slot_attention.attention.shape == (2, 16, 3)
    model.eval()
    first = model({"image": image})
    second = model({"image": image})
    assert torch.equal(first.tokens, second.tokens)
    assert torch.equal(first.tokens, model.encode_image_tokens(image))
    assert torch.equal(first.dvae_reconstruction, second.dvae_reconstruction)


def test_loss_is_slate_convention() -> None:
    model = build_slate(tiny_config()).eval()
    image = torch.rand(3, 3, 16, 16)
    output = model({"image": image})
    loss = model.compute_loss(output, {"image": image})
    mse = sum(((output.dvae_reconstruction[b] - image[b]) ** 2).sum() for b in range(3)) / 3
    log_probs = output.logits.log_softmax(-1)
    one_hot = F.one_hot(output.tokens, 12).float()
    cross_entropy = -(one_hot * log_probs).sum() / 3  # SLATE's dense form
    torch.testing.assert_close(loss.terms["mse"], mse)
    torch.testing.assert_close(loss.terms["cross_entropy"], cross_entropy)
    torch.testing.assert_close(loss.loss, mse + cross_entropy)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cross_entropy_reaches_every_parameter_but_the_dvae(variant: str) -> None:
    model = build_slate(tiny_config(variant)).train()
    image = torch.rand(2, 3, 16, 16)
    output = model({"image": image})
    model.compute_loss(output, {"image": image})
    cross_entropy = F.cross_entropy(output.logits.flatten(0, 1), output.tokens.flatten(), reduction="sum")
    cross_entropy.backward()
    groups = model.parameter_groups()
    assert all(p.grad is None for p in groups["dvae"])
    names = {id(p): name for name, p in model.named_parameters()}
    missing = {names[id(p)] for p in groups["main"] if p.grad is None or not p.grad.abs().sum() > 0}
    if variant == "vanilla":
        assert missing == set()
    else:
        # Implicit variants start the solve from detached slots: the initial Gaussian gets no gradient.
        assert missing <= {"slot_attention.initializer.mu", "slot_attention.initializer.log_sigma"}


def test_mse_reaches_only_the_dvae() -> None:
    model = build_slate(tiny_config()).train()
    image = torch.rand(2, 3, 16, 16)
    output = model({"image": image})
    mse = model.compute_loss(output, {"image": image}).terms["mse"]
    assert not mse.requires_grad  # terms are detached
    (output.dvae_reconstruction - image).square().sum().backward()
    groups = model.parameter_groups()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["dvae"])
    assert all(p.grad is None for p in groups["main"])


def test_parameter_groups_partition_the_parameters() -> None:
    model = build_slate(tiny_config())
    groups = model.parameter_groups()
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups["dvae"]} == {id(p) for p in model.dvae.parameters()}


def test_gumbel_temperature_is_a_scheduled_hyperparameter() -> None:
    model = build_slate(tiny_config())
    assert model.hyperparameter_names() == ("gumbel_temperature",)
    model.set_hyperparameters({"gumbel_temperature": 0.25})
    assert model.gumbel_temperature == 0.25
    with pytest.raises(KeyError, match="gumbel_temperature"):
        model.set_hyperparameters({"tau": 0.5})


@pytest.mark.slow
def test_training_steps_lower_both_losses() -> None:
    torch.manual_seed(0)
    model = build_slate(tiny_config("IN", vocab_size=8))
    image = torch.rand(4, 3, 16, 16)
    batch = {"image": image}
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(
        [{"params": groups["dvae"], "lr": 3e-3}, {"params": groups["main"], "lr": 3e-3}]
    )

    def evaluate() -> dict[str, float]:
        model.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            terms = model.compute_loss(model(batch), batch).terms
        model.train()
        return {name: float(value) for name, value in terms.items()}

    before = evaluate()
    for _ in range(40):
        optimizer.zero_grad()
        model.compute_loss(model(batch), batch).loss.backward()
        optimizer.step()
    after = evaluate()
    assert after["mse"] < 0.5 * before["mse"]
    assert after["cross_entropy"] < 0.8 * before["cross_entropy"]


def test_gumbel_sample_shares_one_draw() -> None:
    logits = torch.randn(4, 3, 3, 5)
    sample = sample_gumbel_tokens(logits, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample.tokens, sample.soft.argmax(dim=-1))
    torch.testing.assert_close(sample.soft.sum(dim=-1), torch.ones(4, 3, 3))
    # The relaxed sample is softmax((logits + g) / tau) of one draw g; tau only sharpens it.
    sharper = sample_gumbel_tokens(logits, temperature=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sharper.tokens, sample.tokens)
    assert sharper.soft.amax(-1).mean() > sample.soft.amax(-1).mean()


def test_gumbel_tokens_follow_the_softmax_distribution() -> None:
    # Gumbel-max: argmax(l + g) ~ Categorical(softmax(l)); 20000 draws of 4 categories.
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5]).view(1, 1, 1, 4).expand(20000, 1, 1, 4)
    sample = sample_gumbel_tokens(logits, 1.0, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(sample.tokens.flatten(), minlength=4).float() / 20000
    torch.testing.assert_close(frequencies, torch.softmax(logits[0, 0, 0], 0), atol=0.012, rtol=0)


def test_decode_tokens_equals_decoding_the_one_hot() -> None:
    dvae = DiscreteVAE(vocab_size=10, hidden_channels=8).double()
    tokens = torch.randint(0, 10, (2, 4, 4))
    one_hot = F.one_hot(tokens, 10).double()  # (B, h, w, V)
    torch.testing.assert_close(dvae.decode_tokens(tokens), dvae.decode_soft(one_hot))


def test_chunked_causal_attention_equals_fused() -> None:
    query, key, value = (torch.randn(2, 3, 50, 4, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    chunked = _chunked_causal_attention(query, key, value, dropout_p=0.0, chunk_size=16)
    torch.testing.assert_close(chunked, expected)


def test_chunked_causal_attention_drops_only_visible_weights() -> None:
    # With one-hot values the output is the (dropped) attention weights themselves: every entry is 0 or
    # the undropped weight / (1 - p), and no chunk lets a query see a later key.
    length, p = 53, 0.3
    query, key = (torch.randn(1, 2, length, 4, dtype=torch.float64) for _ in range(2))
    value = torch.eye(length, dtype=torch.float64).expand(1, 2, length, length)
    weights = _chunked_causal_attention(query, key, value, dropout_p=0.0, chunk_size=16)
    dropped = _chunked_causal_attention(query, key, value, dropout_p=p, chunk_size=16)
    assert torch.all(weights.triu(1) == 0) and torch.all(dropped.triu(1) == 0)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], weights[kept] / (1 - p))
    visible = int(torch.ones(length, length).tril().sum()) * 2
    assert 0.5 < int(kept.sum()) / visible < 0.9  # about 1 - p kept


@pytest.mark.parametrize(
    ("device", "dropout_p", "fused_calls", "chunk_dropouts"),
    [("cpu", 0.1, 0, 4), ("cpu", 0.0, 1, 0), ("meta", 0.1, 1, 0)],
)
def test_causal_attention_chunks_only_dropout_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, device: str, dropout_p: float, fused_calls: int, chunk_dropouts: int
) -> None:
    # Off the CPU (CUDA; here the meta device) the fused kernels apply dropout themselves: one call, causal.
    # On the CPU with dropout: four chunks, each dropping its weights with the cheaper CPU mask.
    seen: list[bool] = []
    fused = F.scaled_dot_product_attention
    dropped: list[float] = []
    cpu_dropout = transformer.dropout

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(bool(kwargs.get("is_causal", False)))
        return fused(*args, **kwargs)  # type: ignore[arg-type]

    def recording_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        dropped.append(p)
        return cpu_dropout(x, p, training)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", recording)
    monkeypatch.setattr(transformer, "dropout", recording_dropout)
    query, key, value = (
        torch.randn(1, 2, 4 * transformer.CAUSAL_CHUNK_SIZE, 8, device=device) for _ in range(3)
    )
    out = causal_attention(query, key, value, dropout_p)
    assert out.shape == query.shape and out.device.type == device
    assert len(seen) == fused_calls and all(seen)
    assert dropped == [dropout_p] * chunk_dropouts


def test_cpu_dropout_has_the_law_of_dropout() -> None:
    p = 0.25
    x = torch.ones(100_000, requires_grad=True)
    torch.manual_seed(0)
    out = transformer.dropout(x, p, training=True)
    torch.manual_seed(0)
    assert torch.equal(transformer.dropout(x, p, training=True), out)  # the global generator's draw
    kept = out != 0
    assert torch.all(out[kept] == 1 / (1 - p))
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01  # binomial sd 0.0014
    out.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, out.detach())  # d out / d x = the scaled mask
    assert transformer.dropout(x, p, training=False) is x
    half = transformer.dropout(torch.ones(1000, dtype=torch.bfloat16), p, training=True)
    assert half.dtype == torch.bfloat16
    assert set(half.unique().tolist()) == {0.0, torch.tensor(1 / (1 - p), dtype=torch.bfloat16).item()}


def test_dropout_is_configurable_and_off_in_eval() -> None:
    model = build_slate(tiny_config(dropout=0.5, attention_dropout=0.5)).eval()
    image = torch.rand(2, 3, 16, 16)
    torch.manual_seed(0)
    first = model({"image": image}).logits
    torch.manual_seed(0)
    second = model({"image": image}).logits
    assert torch.equal(first, second)


def test_bad_inputs_raise_clear_errors() -> None:
    model = build_slate(tiny_config())
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 16, 16\), got \(2, 3, 20, 20\)"):
        model({"image": torch.rand(2, 3, 20, 20)})
    with pytest.raises(ValueError, match=r"model\.d_model must be a positive integer"):
        tiny_config(d_model=0).validate()  # the schema's rule (load_config runs it)
    with pytest.raises(ValueError, match=r"model\.dropout must be in"):
        tiny_config(dropout=1.5).validate()
    with pytest.raises(ValueError, match="multiple of 4"):
        build_slate(tiny_config(image_size=18))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        build_slate(tiny_config(num_heads=3))
    with pytest.raises(ValueError, match=r"slot_attention\.input_dim=8 must equal d_model=16"):
        Slate(16, SlotAttention(8, num_slots=2, slot_dim=8, mlp_hidden_dim=8, num_iterations=1), d_model=16)
    with pytest.raises(TypeError, match="expects a SlateOutput"):
        model.compute_loss(object(), {"image": torch.rand(1, 3, 16, 16)})  # type: ignore[arg-type]


def test_visualise_rows() -> None:
    model = build_slate(tiny_config())
    image = torch.rand(2, 3, 16, 16)
    images = model.visualise(model({"image": image}), {"image": image})
    row = images["slate"]
    assert row.shape == (2, 3, 16, 16 * (2 + 3))
    assert row.min() >= 0 and row.max() <= 1
    torch.testing.assert_close(row[..., :16], image)


def test_slate_subclass() -> None:
    assert issubclass(Slate, torch.nn.Module)


def test_sinusoidal_2d_position_init() -> None:
    grid = 16
    positions = sinusoidal_2d_positions(grid, 64)  # (256, 64)
    assert positions.shape == (grid * grid, 64)
    assert positions.square().mean().item() == pytest.approx(1.0, abs=0.1)  # SLATE's N(0, 1) scale
    # Raster order: token t is row t // grid, column t % grid. Nearer tokens have more similar embeddings.
    grid_view = positions.view(grid, grid, 64)
    centre = grid_view[8, 8]

    def distance(row: int, column: int) -> float:
        return float((grid_view[row, column] - centre).norm())

    assert distance(8, 9) < distance(8, 11) < distance(8, 15)
    assert distance(9, 8) < distance(11, 8) < distance(15, 8)
    assert len({tuple(row.tolist()) for row in positions}) == grid * grid  # every token distinct
    model = build_slate(tiny_config(position_init="sinusoidal_2d"))
    torch.testing.assert_close(model.position_embedding[0, 1:].detach(), sinusoidal_2d_positions(4, 16))
    assert model.position_embedding.requires_grad  # still learned
    with pytest.raises(ValueError, match="position_init"):
        build_slate(tiny_config(position_init="fourier"))
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_2d_positions(4, 18)
