"""Every file under configs/paper/ validates; the arms of an experiment differ only in what the
experiment varies; every CPU-scale file (and the paper-scale files, on procedural stand-ins for their real
datasets) trains one step at a tiny size."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from implicit_slots.config import (
    DataConfig,
    ExperimentConfig,
    SplitSizes,
    config_to_dict,
    load_config,
    validate_config,
)
from implicit_slots.reproduce.experiments import CONFIG_ROOT, EXPERIMENTS, SCALES, config_names
from implicit_slots.training.loop import train

CPU_CONFIGS = [CONFIG_ROOT / "cpu" / f"{name}.yaml" for name in config_names("cpu")]
PAPER_CONFIGS = [CONFIG_ROOT / "paper" / f"{name}.yaml" for name in config_names("paper")]
BASES = sorted(CONFIG_ROOT.glob("*/_*.yaml"))
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


def _header(path: Path) -> str:
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))


@pytest.mark.parametrize("path", CPU_CONFIGS + PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_validates_and_cites_the_paper(path: Path) -> None:
    config = _load(path)
    header = _header(path)
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


@pytest.mark.parametrize("path", BASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_base_files_validate_and_say_what_they_share(path: Path) -> None:
    """A base is a complete config of its own (its implicit arm) with a header naming its experiments."""
    _load(path)
    header = _header(path)
    assert re.search(r"(Fig\. \d|Table \d)", header) and "`base:`" in header, header
    users = [p for p in path.parent.glob("*.yaml") if yaml.safe_load(p.read_text()).get("base") == path.name]
    assert users, f"no config of {path.parent.name} names {path.name} as its base"


def test_cpu_slate_claims_share_the_main_jobs_recipe_on_clevr_mirror_lite() -> None:
    """The SLATE recipe of the CPU claims is the main job's, on clevr-mirror-lite at one thread."""
    main_job = _flat(config_to_dict(_load(CONFIG_ROOT.parents[0] / "slate_clevr_lite.yaml")))
    recipe = _flat(config_to_dict(_load(CONFIG_ROOT / "cpu" / "_base_slate.yaml")))
    differing = {key for key in main_job.keys() | recipe.keys() if main_job.get(key) != recipe.get(key)}
    # What differs: the dataset, the run length, one thread, and how often curves are logged.
    allowed = {
        "data.name",
        "training.max_steps",
        "training.num_threads",
        "diagnostics.every",
        "diagnostics.images_every",
    }
    assert differing <= allowed, sorted(differing - allowed)
    assert recipe["data.name"] == "clevr-mirror-lite" and recipe["training.num_threads"] == 1


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# What each factor of an arm's name may change in its resolved config (dotted keys, or prefixes ending in
# ".").
FACTOR_KEYS = {
    "variant": ("model.slot_attention.variant",),
    "iterations": ("model.slot_attention.num_iterations",),
    "no_clip": ("training.grad_clip.norm",),
    "no_warmup": ("training.optimizer.warmup_steps",),
    "no_decay": ("training.lr_decay.",),
}


def _factors(experiment: str, name: str) -> dict[str, str]:
    """The factors an arm's name states: variant, iteration count, ablated tricks, Table 3's dataset."""
    variant = "vanilla" if "_vanilla" in name else "IN"
    for short in ("IB", "BB", "BN"):
        if name.endswith(f"_{short}"):
            variant = short
    iterations = re.search(r"_iter(\d+)", name)
    factors = {
        "variant": variant,
        "iterations": iterations.group(1) if iterations else ("3" if experiment == "fig7" else "7"),
        **{trick: str(f"_{trick}" in name) for trick in ("no_clip", "no_warmup", "no_decay")},
    }
    if experiment == "table3":
        factors["dataset"] = name.split("_")[1]
    return factors


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == pattern or (pattern.endswith(".") and key.startswith(pattern)) for pattern in patterns)


# Table 3 cells of different datasets have their own recipes: only cells of one dataset are compared.
ARM_PAIRS = [
    (scale, experiment.name, a.config, b.config)
    for scale in SCALES
    for experiment in EXPERIMENTS.values()
    for a, b in itertools.combinations(experiment.curves, 2)
    if _factors(experiment.name, a.config).get("dataset")
    == _factors(experiment.name, b.config).get("dataset")
]


@pytest.mark.parametrize(("scale", "experiment", "first", "second"), ARM_PAIRS, ids=lambda v: str(v))
def test_arms_differ_exactly_in_what_the_experiment_varies(
    scale: str, experiment: str, first: str, second: str
) -> None:
    """Two arms of one experiment differ in the keys of the factors their names differ in, in every one of
    those factors, and in nothing else (so a recipe cannot drift between arms)."""
    factors_a, factors_b = _factors(experiment, first), _factors(experiment, second)
    a = _flat(config_to_dict(_load(CONFIG_ROOT / scale / f"{first}.yaml")))
    b = _flat(config_to_dict(_load(CONFIG_ROOT / scale / f"{second}.yaml")))
    differing = {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    varied = [factor for factor in FACTOR_KEYS if factors_a[factor] != factors_b[factor]]
    allowed = tuple(pattern for factor in varied for pattern in FACTOR_KEYS[factor])
    assert {key for key in differing if not _matches(key, allowed)} == set(), (varied, sorted(differing))
    for factor in varied:
        assert any(_matches(key, FACTOR_KEYS[factor]) for key in differing), (factor, sorted(differing))
    if not varied:  # the same experiment under two names (e.g. Fig. 6b and 6c's implicit 7 iterations)
        assert differing == set()


SLATE_RECIPE_ARMS = [
    (scale, name)
    for scale in SCALES
    for name in config_names(scale)
    if yaml.safe_load((CONFIG_ROOT / scale / f"{name}.yaml").read_text()).get("base") == "_base_slate.yaml"
]


@pytest.mark.parametrize(("scale", "name"), SLATE_RECIPE_ARMS, ids=lambda value: str(value))
def test_slate_arms_differ_from_their_shared_recipe_only_in_their_factors(scale: str, name: str) -> None:
    """Across experiments too: an arm built on ``_base_slate.yaml`` (the implicit IN arm, 7 iterations,
    all tricks) differs from it only in what its name states, so e.g. Fig. 3b's BB and Fig. 5's arms
    share one recipe."""
    experiment = re.match(r"(fig\d|table\d)", name)
    assert experiment is not None
    factors = _factors(experiment.group(1), name)
    reference = _factors("", "base")
    varied = [factor for factor in FACTOR_KEYS if factors[factor] != reference[factor]]
    allowed = tuple(pattern for factor in varied for pattern in FACTOR_KEYS[factor])
    if factors.get("dataset", "clevr") != "clevr":
        allowed += ("data.",)
    base = _flat(config_to_dict(_load(CONFIG_ROOT / scale / "_base_slate.yaml")))
    arm = _flat(config_to_dict(_load(CONFIG_ROOT / scale / f"{name}.yaml")))
    differing = {key for key in base.keys() | arm.keys() if base.get(key) != arm.get(key)}
    assert {key for key in differing if not _matches(key, allowed)} == set(), (varied, sorted(differing))


def _variant(config: ExperimentConfig) -> tuple[str, int]:
    sa = config.model.config.slot_attention
    return sa.variant, sa.num_iterations


def test_config_names_match_their_settings() -> None:
    """The variant / iterations / ablated trick in a file name is what the file sets."""
    for scale in SCALES:
        for path in [CONFIG_ROOT / scale / f"{name}.yaml" for name in config_names(scale)]:
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
