"""Every file under configs/paper/ validates; every CPU-scale file (and the paper-scale files, on
procedural stand-ins for their real datasets) trains one step at a tiny size."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from implicit_slots.config import DataConfig, ExperimentConfig, SplitSizes, load_config, validate_config
from implicit_slots.reproduce.experiments import CONFIG_ROOT, EXPERIMENTS, SCALES
from implicit_slots.training.loop import train

CPU_CONFIGS = sorted((CONFIG_ROOT / "cpu").glob("*.yaml"))
PAPER_CONFIGS = sorted((CONFIG_ROOT / "paper").glob("*.yaml"))
# Real datasets of the paper scale -> the embedded dataset that stands in for them in this test.


@functools.cache
def _load(path: Path) -> ExperimentConfig:
    """Configs are loaded once per test session (OmegaConf validation is the slow part here)."""
    return load_config(path)


STAND_INS = {
    "clevr-mirror": "clevr-mirror-lite",
    "shapestacks": "clevr-lite",
    "coco": "sprites",
    "clevr": "clevr-lite",
    "dm-clevr6": "clevr-lite",
}


def test_config_folders_hold_the_same_names_at_both_scales() -> None:
    assert [p.name for p in CPU_CONFIGS] == [p.name for p in PAPER_CONFIGS]
    assert len(CPU_CONFIGS) == 36


def test_every_config_belongs_to_an_experiment_and_every_curve_has_a_file() -> None:
    curves = {curve.config for experiment in EXPERIMENTS.values() for curve in experiment.curves}
    assert curves == {p.stem for p in CPU_CONFIGS}
    assert list(EXPERIMENTS) == ["fig3a", "fig3b", "table3", "fig5", "fig6", "fig7", "fig8"]


@pytest.mark.parametrize("path", CPU_CONFIGS + PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_validates_and_cites_the_paper(path: Path) -> None:
    config = _load(path)
    header = path.read_text().split("\nmodel:")[0]
    # The header names the figure / table it reproduces, and the figure matches the file name.
    match = re.match(r"(fig\d|table\d)", path.stem)
    assert match is not None
    number = match.group(1)[-1]
    assert re.search(rf"(Fig\. {number}|Table {number})", header), header
    assert "§5" in header or "§4" in header
    if path.parent.name == "paper":
        assert config.data.root is None, "paper-scale data roots are placeholders set with data.root=..."
        assert config.data.name in STAND_INS
    else:
        assert config.training.device == "cpu" and config.training.num_threads == 1
        assert config.data.name in ("clevr-mirror-lite", "clevr-lite", "sprites", "tetrominoes")


def _variant(config: ExperimentConfig) -> tuple[str, int]:
    sa = config.model.config.slot_attention
    return sa.variant, sa.num_iterations


def test_config_names_match_their_settings() -> None:
    """The variant / iterations / ablated trick in a file name is what the file sets."""
    for scale in SCALES:
        for path in sorted((CONFIG_ROOT / scale).glob("*.yaml")):
            config = _load(path)
            variant, iterations = _variant(config)
            name = path.stem
            expected = "vanilla" if "vanilla" in name else "IN"
            for short in ("IB", "BB", "BN"):
                if name.endswith(f"_{short}"):
                    expected = short
            assert variant == expected, name
            if "iter" in name:
                assert iterations == int(name.rsplit("iter", 1)[1]), name
            elif config.model.name == "slate":
                assert iterations == 7, name
            t = config.training
            if config.model.name == "slate":  # SLATE's three tricks; Locatello's models never clip
                assert (t.grad_clip.norm is None) == ("no_clip" in name), name
                assert (t.optimizer.warmup_steps == 0) == ("no_warmup" in name), name
                assert (t.lr_decay.kind is None) == ("no_decay" in name), name
            if name.startswith("table3") and scale == "paper":
                assert config.data.image_size == 96 and t.max_steps == 250_000, name
            if name.startswith(("fig3a", "fig3b")) and scale == "paper":
                assert config.data.image_size == 64, name
                assert config.model.config.slot_attention.backward_max_iterations == 7, name


def _shrink_model(model: Any, name: str, image_size: int) -> Any:
    # The number of slots stays (set prediction needs one per object).
    sa = dataclasses.replace(model.slot_attention, slot_dim=16, mlp_hidden_dim=16)
    if name == "slate":
        return dataclasses.replace(
            model,
            image_size=image_size,
            vocab_size=16,
            dvae_hidden_channels=8,
            d_model=16,
            num_heads=2,
            num_decoder_blocks=1,
            slot_attention=sa,
        )
    if name == "autoencoder":
        return dataclasses.replace(
            model,
            image_size=image_size,
            encoder_channels=8,
            decoder_channels=8,
            decoder_initial_size=image_size // 2,
            slot_attention=sa,
        )
    assert name == "set_prediction", name
    return dataclasses.replace(model, encoder_channels=8, head_hidden_dim=8, slot_attention=sa)


def tiny(config: ExperimentConfig, data_name: str | None = None) -> ExperimentConfig:
    """The same experiment (variant, iterations, tricks, schedules) at a one-step, 16-pixel size."""
    image_size = 16
    data = DataConfig(
        name=data_name or config.data.name,
        image_size=image_size,
        seed=0,
        num_samples=SplitSizes(train=4, val=2, test=2),
        options={k: v for k, v in config.data.options.items() if data_name is None},
    )
    training = dataclasses.replace(
        config.training,
        max_steps=1,
        batch_size=2,
        device="cpu",
        num_threads=1,
        checkpoint_every=0,
        log_every=1,
        validation=dataclasses.replace(
            config.training.validation, every=1 if config.training.validation.every else 0, num_batches=1
        ),
    )
    diagnostics = dataclasses.replace(
        config.diagnostics, every=1, jacobian_iterations=2, jacobian_max_samples=1, images_every=0
    )
    small = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model, config=_shrink_model(config.model.config, config.model.name, 16)
        ),
        data=data,
        training=training,
        diagnostics=diagnostics,
    )
    validate_config(small)
    return small


def _train_one_step(config: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    result = train(config, run_dir)
    assert result.status == "completed" and result.step == 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 1
    return records[-1]


@pytest.mark.parametrize("path", CPU_CONFIGS, ids=lambda p: p.stem)
def test_cpu_config_trains_one_step(path: Path, tmp_path: Path) -> None:
    record = _train_one_step(tiny(_load(path)), tmp_path / "run")
    assert record["loss"] is not None
    # The diagnostics behind Fig. 3a / 5 / 6 are logged.
    for key in ("diag/residual_mean", "diag/jacobian_norm_mean", "grad_norm/total"):
        assert key in record, (path.stem, sorted(record))


# One paper-scale config per (model, dataset) trains on its stand-in (the others differ only in
# slot-attention settings or schedules, which the CPU files exercise).
PAPER_TRAINED = [
    "fig3b_BB",
    "table3_clevr_mirror_implicit",
    "table3_shapestacks_vanilla",
    "table3_coco_implicit",
    "fig5_vanilla_no_decay",
    "fig7_implicit",
    "fig8_vanilla",
]


@pytest.mark.parametrize("name", PAPER_TRAINED)
def test_paper_config_trains_one_step_on_a_stand_in(name: str, tmp_path: Path) -> None:
    config = _load(CONFIG_ROOT / "paper" / f"{name}.yaml")
    record = _train_one_step(tiny(config, STAND_INS[config.data.name]), tmp_path / "run")
    assert record["loss"] is not None
