"""Loading trained models (weights files, checkpoints, run folders) and segmenting images of any size."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from implicit_slots.cli import main
from implicit_slots.config import ExperimentConfig, config_to_dict, load_config, save_config
from implicit_slots.models.registry import get_model_spec
from implicit_slots.pretrained import (
    ModelCard,
    ModelFileError,
    PretrainedModel,
    available_pretrained,
    get_card,
    load_pretrained,
    read_model_file,
    weights_path,
    write_weights,
)

TINY = {
    "slate": [
        "model.name=slate",
        "model.image_size=16",
        "model.vocab_size=8",
        "model.dvae_hidden_channels=8",
        "model.d_model=16",
        "model.num_heads=2",
        "model.num_decoder_blocks=1",
        "model.slot_attention.num_slots=3",
        "model.slot_attention.slot_dim=16",
        "model.slot_attention.mlp_hidden_dim=16",
        "model.slot_attention.num_iterations=2",
    ],
    "autoencoder": [
        "model.name=autoencoder",
        "model.image_size=16",
        "model.encoder_channels=8",
        "model.num_encoder_layers=2",
        "model.decoder_channels=8",
        "model.decoder_initial_size=16",
        "model.decoder_hidden_layers=1",
        "model.slot_attention.num_slots=3",
        "model.slot_attention.slot_dim=16",
        "model.slot_attention.mlp_hidden_dim=16",
        "model.slot_attention.num_iterations=2",
    ],
    "set_prediction": [
        "model.name=set_prediction",
        "model.encoder_channels=8",
        "model.slot_attention.num_slots=3",
        "model.slot_attention.slot_dim=16",
        "model.slot_attention.mlp_hidden_dim=16",
        "model.slot_attention.num_iterations=2",
    ],
}


def tiny(name: str) -> tuple[ExperimentConfig, torch.nn.Module]:
    """A small config of ``name`` and a model built from it (random weights)."""
    config = load_config(None, TINY[name] + ["data.name=clevr-lite", "data.image_size=16"])
    model = get_model_spec(config.model.name).build(config.model.config)
    return config, model


@pytest.mark.parametrize("name", sorted(TINY))
def test_weights_round_trip_and_segment_any_size(name: str, tmp_path: Path) -> None:
    config, model = tiny(name)
    path = write_weights(config, model.state_dict(), 7, tmp_path / "w.pt")
    loaded = load_pretrained(path)
    assert isinstance(loaded, PretrainedModel) and not loaded.training and loaded.step == 7
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    images = torch.rand(2, 3, 23, 37)
    result = loaded.segment(images)
    assert result.masks.shape == (2, 3, 23, 37)
    torch.testing.assert_close(result.masks.sum(dim=1), torch.ones(2, 23, 37))
    assert result.slots.shape == (2, 3, 16)
    assert result.labels.shape == (2, 23, 37)
    if name == "set_prediction":
        assert result.reconstruction is None
    else:
        assert result.reconstruction is not None and result.reconstruction.shape == (2, 3, 23, 37)
        assert float(result.reconstruction.min()) >= 0.0 and float(result.reconstruction.max()) <= 1.0
    again = loaded.segment(images)
    torch.testing.assert_close(again.masks, result.masks)  # the seed fixes the initial slots
    other_seed = loaded.segment(images, seed=1, reconstruct=False)
    assert not torch.equal(other_seed.slots, result.slots)


def test_segment_accepts_single_uint8_images_and_rejects_other_shapes(tmp_path: Path) -> None:
    config, model = tiny("autoencoder")
    loaded = load_pretrained(write_weights(config, model.state_dict(), 1, tmp_path / "w.pt"))
    as_uint8 = loaded.segment(torch.full((3, 16, 16), 255, dtype=torch.uint8), reconstruct=False)
    as_float = loaded.segment(torch.ones(3, 16, 16), reconstruct=False)
    torch.testing.assert_close(as_uint8.masks, as_float.masks)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loaded.segment(torch.rand(2, 4, 16, 16))


def test_slate_masks_are_the_slot_attention_over_tokens(tmp_path: Path) -> None:
    """At the model's own size, SLATE's masks are its attention over the 4x4-pixel token grid."""
    config, model = tiny("slate")
    loaded = load_pretrained(write_weights(config, model.state_dict(), 1, tmp_path / "w.pt"))
    images = torch.rand(1, 3, 16, 16)
    result = loaded.segment(images, reconstruct=False, seed=3)
    slate = loaded.model
    tokens = slate.encode_image_tokens(images)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        attention = slate.encode_slots(slate.embed_tokens(tokens)[:, 1:], generator).attention  # (1, 16, 3)
    expected = slate.attention_masks(attention)
    torch.testing.assert_close(result.masks, expected / expected.sum(dim=1, keepdim=True))


def test_run_folder_and_checkpoint_load_like_weights(tmp_path: Path) -> None:
    config, model = tiny("autoencoder")
    run = tmp_path / "run"
    save_config(config, run / "config.yaml")
    (run / "checkpoints").mkdir()
    checkpoint = {
        "format_version": 1,
        "step": 5,
        "model": model.state_dict(),
        "optimizer": {},
        "config": config_to_dict(config),
    }
    torch.save(checkpoint, run / "checkpoints" / "last.pt")
    from_folder = load_pretrained(run)
    from_file = read_model_file(run / "checkpoints" / "last.pt")
    assert from_folder.step == 5 and from_file.step == 5
    assert config_to_dict(from_file.config) == config_to_dict(config)
    assert main(["pretrained", "export", str(run), str(tmp_path / "exported.pt")]) == 0
    exported = load_pretrained(tmp_path / "exported.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(exported.model.state_dict()[key], value)


class _Arbitrary:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_foreign_and_damaged_files_are_one_clear_error(tmp_path: Path) -> None:
    config, model = tiny("autoencoder")
    good = write_weights(config, model.state_dict(), 1, tmp_path / "good.pt")
    cases = {
        "garbage.pt": b"\x00\x01 not a torch file",
        "truncated.pt": good.read_bytes()[:100],
        "pickle.pt": pickle.dumps(_Arbitrary()),  # weights-only loading refuses arbitrary objects
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"model": {}, "something": 1}, tmp_path / "other_dict.pt")
    for name in [*cases, "list.pt", "other_dict.pt"]:
        with pytest.raises(ModelFileError, match=name):
            load_pretrained(tmp_path / name)
    with pytest.raises(ModelFileError, match="neither a shipped model"):
        load_pretrained("no-such-model")
    with pytest.raises(ModelFileError, match="not a run folder"):
        load_pretrained(tmp_path)


def test_weights_that_do_not_fit_their_config_are_named(tmp_path: Path) -> None:
    config, model = tiny("autoencoder")
    state = dict(model.state_dict())
    state.pop(next(iter(state)))
    with pytest.raises(ModelFileError, match="missing"):
        load_pretrained(write_weights(config, state, 1, tmp_path / "w.pt"))


def _write_images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), "RGB").save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (17, 9), dtype=np.uint8), "L").save(folder / "gray.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "notes.txt").write_text("not an image, not looked at")


def test_segment_command_writes_figures_and_masks_and_skips_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, model = tiny("slate")
    weights = write_weights(config, model.state_dict(), 1, tmp_path / "w.pt")
    _write_images(tmp_path / "images")
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "images"), "--model", str(weights), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # one file skipped, the others written
    assert "broken.png" in captured.err and "resized to 16x16" in captured.out
    for stem, size in (("rgb", (30, 40)), ("rgba", (20, 20)), ("gray", (17, 9))):
        masks = np.load(out / f"{stem}_masks.npy")
        assert masks.shape == (3, *size)
        np.testing.assert_allclose(masks.astype(np.float32).sum(axis=0), 1.0, atol=3e-3)
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert labels.shape == size and labels.max() < 3
        np.testing.assert_array_equal(labels, masks.argmax(axis=0))
        with Image.open(out / f"{stem}.png") as figure:
            assert figure.height == size[0]  # input | reconstruction | segmentation | 3 slots
            assert figure.width == 6 * size[1] + 5 * 2
    assert not (out / "broken.png").exists()
    assert (
        main(["segment", str(tmp_path / "images" / "rgb.png"), "--model", str(weights), "--out", str(out)])
        == 0
    )


def test_segment_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segment", str(tmp_path), "--model", "no-such-model", "--out", str(tmp_path / "o")]) == 2
    assert "neither a shipped model" in capsys.readouterr().err
    _write_images(tmp_path / "images")
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("keep me")
    images = str(tmp_path / "images" / "rgb.png")
    assert main(["segment", images, "--model", "autoencoder-tetrominoes", "--out", str(not_a_folder)]) == 2
    assert "--out" in capsys.readouterr().err and not_a_folder.read_text() == "keep me"
    assert main(["evaluate", "--pretrained", "autoencoder-tetrominoes", "--out", str(not_a_folder)]) == 2
    assert "--out" in capsys.readouterr().err and not_a_folder.read_text() == "keep me"


def test_model_card_reads_and_rejects_unknown_fields() -> None:
    data = {
        "name": "x",
        "description": "d",
        "model": "slate",
        "dataset": "clevr-lite",
        "steps": 1,
        "seed": 0,
        "training_command": "t",
        "commit": "c",
        "evaluation_command": "e",
        "metrics": {"mse": 1.0},
    }
    assert "| mse | 1 |" in ModelCard.from_json(data).to_markdown()
    with pytest.raises(ValueError, match="unknown field"):
        ModelCard.from_json({**data, "typo": 1})


@pytest.mark.parametrize("name", available_pretrained())
def test_every_shipped_model_loads_with_its_card(name: str) -> None:
    card = get_card(name)
    model = load_pretrained(name)
    assert card.name == name and model.config.model.name == card.model
    assert model.step == card.steps
    assert weights_path(name).stat().st_size < 20 * 2**20


def test_evaluate_pretrained_writes_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, model = tiny("autoencoder")
    config = load_config(
        None,
        [
            *TINY["autoencoder"],
            "data.name=clevr-lite",
            "data.image_size=16",
            "data.num_samples={train: 8, val: 8, test: 8}",
        ],
    )
    weights = write_weights(config, model.state_dict(), 3, tmp_path / "w.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--pretrained", str(weights), "--out", str(out), "--max-images", "4"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["pretrained"] == str(weights) and record["run_dir"] is None
    assert record["checkpoint_step"] == 3 and record["metrics"]["num_images"] == 4
    assert "| mse |" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path), "--pretrained", str(weights)]) == 2
    assert main(["evaluate"]) == 2
    assert "either RUN_DIR or --pretrained" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", available_pretrained())
def test_every_shipped_model_reproduces_its_card(name: str, tmp_path: Path) -> None:
    """``implicit-slots evaluate --pretrained NAME`` gives the numbers of the model card."""
    card = get_card(name)
    arguments = shlex.split(card.evaluation_command)
    assert arguments[:4] == ["implicit-slots", "evaluate", "--pretrained", name], card.evaluation_command
    assert main([*arguments[1:], "--out", str(tmp_path)]) == 0
    measured = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for key, value in card.metrics.items():
        assert measured[key] == pytest.approx(value, rel=2e-3, abs=2e-3), key
