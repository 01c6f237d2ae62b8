"""The dVAE-only model (two-stage SLATE's first stage) and SLATE's ``dvae_init`` / ``freeze_dvae`` options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from implicit_slots.config import DataConfig, load_config
from implicit_slots.evaluation import EvaluationOptions, get_evaluator
from implicit_slots.evaluation.runner import evaluate_run
from implicit_slots.models import get_model_spec
from implicit_slots.models.slate import DvaeConfig, DvaeModel, SlateConfig, build_dvae, build_slate
from implicit_slots.slot_attention import SlotAttentionConfig
from implicit_slots.training import train

SIZE, VOCAB = 16, 12


class Images(Dataset):
    """Random images (a plain dataset for the engine)."""

    def __init__(self, count: int, size: int = SIZE, seed: int = 0) -> None:
        self.images = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


def images_factory(data: DataConfig, split: str) -> Dataset:
    return Images(8, data.image_size, seed=0 if split == "train" else 1)


def train_dvae_run(
    run_dir: Path, image_size: int = SIZE, vocab_size: int = VOCAB, extra: tuple[str, ...] = ()
) -> Path:
    config = load_config(
        None,
        [
            "model.name=dvae",
            f"model.image_size={image_size}",
            f"model.vocab_size={vocab_size}",
            "model.dvae_hidden_channels=8",
            "data.name=random",
            f"data.image_size={image_size}",
            "training.max_steps=2",
            "training.batch_size=4",
            "training.device=cpu",
            "training.optimizer.groups.dvae.lr=0.001",
            "training.hyperparameter_schedules.gumbel_temperature.kind=cosine",
            "training.hyperparameter_schedules.gumbel_temperature.start=1.0",
            "training.hyperparameter_schedules.gumbel_temperature.end=0.1",
            "training.hyperparameter_schedules.gumbel_temperature.steps=2",
            *extra,
        ],
    )
    train(config, run_dir, dataset_factory=images_factory)
    return run_dir


def slate_config(**changes: object) -> SlateConfig:
    config = SlateConfig(
        image_size=SIZE,
        vocab_size=VOCAB,
        dvae_hidden_channels=8,
        d_model=16,
        num_heads=2,
        num_decoder_blocks=1,
        slot_attention=SlotAttentionConfig(num_slots=2, slot_dim=16, mlp_hidden_dim=16, num_iterations=2),
    )
    for name, value in changes.items():
        setattr(config, name, value)
    return config


@pytest.fixture(scope="module")
def dvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return train_dvae_run(tmp_path_factory.mktemp("dvae") / "run")


def test_registered_with_slate_names_and_defaults() -> None:
    spec = get_model_spec("dvae")
    assert spec.config_type is DvaeConfig
    defaults, slate = DvaeConfig(), SlateConfig()
    for name in ("image_size", "vocab_size", "dvae_hidden_channels", "gumbel_temperature"):
        assert getattr(defaults, name) == getattr(slate, name)


def test_state_dict_is_slates_dvae() -> None:
    dvae = build_dvae(DvaeConfig(image_size=SIZE, vocab_size=VOCAB, dvae_hidden_channels=8))
    slate = build_slate(slate_config())
    slate_dvae_keys = {k for k in slate.state_dict() if k.startswith("dvae.")}
    assert set(dvae.state_dict()) == slate_dvae_keys
    assert set(dvae.parameter_groups()) == {"dvae"}


def test_loss_is_slates_dvae_mse_and_a_step_lowers_it() -> None:
    torch.manual_seed(0)
    model = build_dvae(DvaeConfig(image_size=SIZE, vocab_size=VOCAB, dvae_hidden_channels=8)).train()
    batch = {"image": torch.rand(4, 3, SIZE, SIZE)}
    output = model(batch)
    loss = model.compute_loss(output, batch)
    expected = (output.reconstruction - batch["image"]).square().sum() / 4
    torch.testing.assert_close(loss.loss, expected)
    assert set(loss.terms) == {"mse"}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = loss.loss.item()
    for _ in range(20):
        optimizer.zero_grad()
        model.compute_loss(model(batch), batch).loss.backward()
        optimizer.step()
    assert model.compute_loss(model(batch), batch).loss.item() < first


def test_trains_and_evaluates_through_the_engine(dvae_run: Path) -> None:
    result = evaluate_run(dvae_run, split="test", dataset_factory=images_factory)
    assert result.checkpoint_step == 2
    metrics = json.loads(result.path.read_text())["metrics"]
    assert set(metrics) == {
        "mse_dvae",
        "mse_background",
        "background_token",
        "background_token_fraction",
        "tokens_used",
        "num_images",
    }
    assert metrics["num_images"] == 8 and 1 <= metrics["tokens_used"] <= VOCAB
    assert 0 < metrics["background_token_fraction"] <= 1
    assert (dvae_run / "eval" / "dvae_test.png").is_file()


def test_diagnostics_of_a_model_without_slot_attention_log_no_fixed_point_numbers(tmp_path: Path) -> None:
    run = train_dvae_run(tmp_path / "run", extra=("diagnostics.every=1", "training.log_every=1"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "grad_norm/total" in r or any(k.startswith("grad_norm/") for k in r)]
    assert steps and not any(k.startswith("diag/") for r in records for k in r)


def test_background_mse_is_that_of_the_most_frequent_token_everywhere(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_dvae(DvaeConfig(image_size=SIZE, vocab_size=VOCAB, dvae_hidden_channels=8)).eval()
    images = Images(5)
    options = EvaluationOptions(out_dir=tmp_path, batch_size=2)
    metrics = get_evaluator("dvae")(model, images, options).metrics
    with torch.no_grad():
        tokens = model.dvae.encode(images.images).argmax(-1)  # (5, 4, 4)
        token = int(torch.bincount(tokens.flatten(), minlength=VOCAB).argmax())
        background = model.dvae.decode_tokens(torch.full_like(tokens, token)).clamp(0, 1)
        reconstruction = model.dvae.decode_tokens(tokens).clamp(0, 1)
    assert metrics["background_token"] == token
    expected = (images.images - background).square().sum() / 5
    assert metrics["mse_background"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["mse_dvae"] == pytest.approx(float((images.images - reconstruction).square().sum() / 5))


def test_dvae_init_loads_the_weights_from_a_run_folder_or_checkpoint(dvae_run: Path) -> None:
    trained = torch.load(dvae_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for path in (dvae_run, dvae_run / "checkpoints" / "last.pt"):
        model = build_slate(slate_config(dvae_init=str(path)))
        for key, value in model.dvae.state_dict().items():
            torch.testing.assert_close(value, trained[f"dvae.{key}"], rtol=0, atol=0)
        assert not model.dvae_frozen  # loading alone does not freeze
    # The equality above is not that of two fresh initialisations.
    fresh = build_slate(slate_config())
    assert not torch.equal(fresh.dvae.token_logits.weight, trained["dvae.token_logits.weight"])


def test_dvae_init_from_a_slate_checkpoint(tmp_path: Path, dvae_run: Path) -> None:
    source = build_slate(slate_config(dvae_init=str(dvae_run)))
    path = tmp_path / "slate.pt"
    torch.save(
        {"model": source.state_dict(), "config": {"model": {"name": "slate", "image_size": SIZE}}}, path
    )
    target = build_slate(slate_config(dvae_init=str(path)))
    torch.testing.assert_close(target.dvae.state_dict(), source.dvae.state_dict(), rtol=0, atol=0)


def test_frozen_dvae_gets_no_update_while_the_rest_changes(dvae_run: Path) -> None:
    torch.manual_seed(0)
    model = build_slate(slate_config(dvae_init=str(dvae_run), freeze_dvae=True)).train()
    assert all(not p.requires_grad for p in model.dvae.parameters())
    groups = model.parameter_groups()
    assert groups["dvae"] == [] and groups["main"]
    optimizer = torch.optim.Adam(
        [{"params": params} for params in groups.values() if params], lr=1e-2
    )  # as the engine builds it (from parameter_groups)
    dvae_before = {k: v.clone() for k, v in model.dvae.state_dict().items()}
    main_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("dvae.")}
    batch = {"image": torch.rand(4, 3, SIZE, SIZE)}
    output = model(batch)
    losses = model.compute_loss(output, batch)
    torch.testing.assert_close(losses.loss, losses.terms["cross_entropy"])  # the dVAE's MSE is out
    assert not losses.terms["mse"].requires_grad
    losses.loss.backward()
    assert all(p.grad is None for p in model.dvae.parameters())
    optimizer.step()
    for key, value in model.dvae.state_dict().items():
        torch.testing.assert_close(value, dvae_before[key], rtol=0, atol=0)
    changed = [
        k for k, v in model.state_dict().items() if k in main_before and not torch.equal(v, main_before[k])
    ]
    assert "token_head.weight" in changed and "slot_projection.weight" in changed
    # The tokens are the frozen dVAE's argmax tokens, in training as in evaluation.
    with torch.no_grad():
        expected = model.dvae.encode(batch["image"]).argmax(-1).flatten(1)
    assert torch.equal(output.tokens, expected)


def test_frozen_slate_trains_through_the_engine(tmp_path: Path, dvae_run: Path) -> None:
    config = load_config(
        None,
        [
            "model.name=slate",
            f"model.image_size={SIZE}",
            f"model.vocab_size={VOCAB}",
            "model.dvae_hidden_channels=8",
            "model.d_model=16",
            "model.num_heads=2",
            "model.num_decoder_blocks=1",
            "model.slot_attention.num_slots=2",
            "model.slot_attention.slot_dim=16",
            "model.slot_attention.mlp_hidden_dim=16",
            f"model.dvae_init={dvae_run}",
            "model.freeze_dvae=true",
            "data.name=random",
            f"data.image_size={SIZE}",
            "training.max_steps=2",
            "training.batch_size=4",
            "training.device=cpu",
            "training.optimizer.groups.dvae.lr=0.0003",
        ],
    )
    result = train(config, tmp_path / "slate", dataset_factory=images_factory)
    trained = torch.load(dvae_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in result.model.dvae.state_dict().items():
        torch.testing.assert_close(value, trained[f"dvae.{key}"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("image_size", "vocab_size", "message"),
    [
        (
            SIZE,
            VOCAB + 4,
            f"image_size={SIZE}, vocab_size={VOCAB}, but this model has image_size={SIZE}, "
            f"vocab_size={VOCAB + 4}",
        ),
        (2 * SIZE, VOCAB, f"image_size={SIZE}, vocab_size={VOCAB}, but this model has image_size={2 * SIZE}"),
    ],
)
def test_size_or_vocabulary_mismatch_is_one_error(
    dvae_run: Path, image_size: int, vocab_size: int, message: str
) -> None:
    config = slate_config(image_size=image_size, vocab_size=vocab_size, dvae_init=str(dvae_run))
    with pytest.raises(ValueError, match=r"model\.dvae_init") as error:
        build_slate(config)
    assert message in str(error.value) and "last.pt" in str(error.value)


def test_bad_dvae_init_paths_and_freezing_without_init_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a run folder nor a checkpoint"):
        build_slate(slate_config(dvae_init=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"has no checkpoints/last\.pt"):
        build_slate(slate_config(dvae_init=str(tmp_path)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable weights-only checkpoint"):
        build_slate(slate_config(dvae_init=str(junk)))
    with pytest.raises(ValueError, match=r"freeze_dvae needs model\.dvae_init"):
        slate_config(freeze_dvae=True).validate()


def test_model_without_dvae_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "config": {"model": {"name": "autoencoder", "image_size": SIZE}}}, path)
    with pytest.raises(ValueError, match="expected a 'dvae' or 'slate' run"):
        build_slate(slate_config(dvae_init=str(path)))
    assert isinstance(build_dvae(DvaeConfig(image_size=8, vocab_size=4, dvae_hidden_channels=4)), DvaeModel)
