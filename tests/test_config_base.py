"""Layered config files: ``base: PATH`` chains, overrides on top of them, and the errors they can raise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from implicit_slots.config import ConfigError, load_config, save_config

RECIPE = """\
model:
  name: slate
  image_size: 32
  vocab_size: 64
  slot_attention: {num_slots: 4, num_iterations: 7, variant: IN}
data: {name: sprites, image_size: 32, options: {min_objects: 1, max_objects: 3}}
training:
  max_steps: 100
  optimizer: {lr: 0.001, betas: [0.9, 0.99], groups: {dvae: {lr: 0.0003}}}
  grad_clip: {norm: inf, max_norm: 1.0}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_states_only_what_differs_and_wins(tmp_path: Path) -> None:
    _write(tmp_path / "_base.yaml", RECIPE)
    child = _write(
        tmp_path / "vanilla.yaml",
        "# the vanilla arm\nbase: _base.yaml\nmodel: {slot_attention: {variant: vanilla}}\n"
        "training: {grad_clip: {norm: null}, optimizer: {betas: [0.5, 0.9]}}\n",
    )
    config = load_config(child)
    sa = config.model.config.slot_attention
    assert sa.variant == "vanilla"
    # Mappings merge key by key: the base's other values in the same mapping stay.
    assert (sa.num_slots, sa.num_iterations, config.model.config.vocab_size) == (4, 7, 64)
    assert config.data.options == {"min_objects": 1, "max_objects": 3}
    assert config.training.optimizer.lr == 0.001
    assert config.training.optimizer.groups["dvae"].lr == 0.0003
    # null switches a trick off; lists are replaced, not merged.
    assert config.training.grad_clip.norm is None
    assert config.training.optimizer.betas == [0.5, 0.9]


def test_chains_resolve_relative_to_each_file(tmp_path: Path) -> None:
    _write(tmp_path / "shared" / "recipe.yaml", RECIPE)
    _write(tmp_path / "shared" / "sub" / "_fig.yaml", "base: ../recipe.yaml\ntraining: {max_steps: 200}\n")
    leaf = _write(
        tmp_path / "arms" / "iter3.yaml",
        "base: ../shared/sub/_fig.yaml\nmodel: {slot_attention: {num_iterations: 3}}\n",
    )
    config = load_config(leaf)
    assert config.training.max_steps == 200
    assert config.model.config.slot_attention.num_iterations == 3
    assert config.model.config.slot_attention.variant == "IN"
    assert config.data.name == "sprites"


def test_overrides_apply_on_top_of_the_resolved_chain(tmp_path: Path) -> None:
    _write(tmp_path / "_base.yaml", RECIPE)
    child = _write(tmp_path / "arm.yaml", "base: _base.yaml\ntraining: {max_steps: 300}\n")
    config = load_config(child, ["training.max_steps=7", "model.slot_attention.num_slots=6"])
    assert config.training.max_steps == 7
    assert config.model.config.slot_attention.num_slots == 6
    assert config.model.config.vocab_size == 64


def test_a_base_file_alone_and_its_only_child_resolve_equal(tmp_path: Path) -> None:
    base = _write(tmp_path / "_base.yaml", RECIPE)
    child = _write(tmp_path / "same.yaml", "# nothing differs\nbase: _base.yaml\n")
    assert load_config(child) == load_config(base)


def test_saved_config_is_fully_resolved(tmp_path: Path) -> None:
    _write(tmp_path / "_base.yaml", RECIPE)
    child = _write(tmp_path / "arm.yaml", "base: _base.yaml\nmodel: {slot_attention: {variant: BB}}\n")
    config = load_config(child)
    saved = tmp_path / "run" / "config.yaml"
    save_config(config, saved)
    values = yaml.safe_load(saved.read_text())
    assert "base" not in values
    assert values["model"]["vocab_size"] == 64 and values["model"]["slot_attention"]["variant"] == "BB"
    # The saved file reads back without its base (which could have moved or changed since).
    (tmp_path / "_base.yaml").unlink()
    assert load_config(saved) == config


def test_cycle_is_one_error_naming_the_chain(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: sub/c.yaml\n")
    _write(tmp_path / "sub" / "c.yaml", "base: ../a.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as caught:
        load_config(tmp_path / "a.yaml")
    message = str(caught.value)
    assert message.index("a.yaml") < message.index("b.yaml") < message.index("c.yaml")
    assert message.count("a.yaml") == 2, message


def test_self_reference_is_a_cycle(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "base: ./a.yaml\n" + RECIPE)
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_is_one_error_naming_the_chain(tmp_path: Path) -> None:
    _write(tmp_path / "arm.yaml", "base: _mid.yaml\n")
    _write(tmp_path / "_mid.yaml", "base: _gone.yaml\n")
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(tmp_path / "arm.yaml")
    message = str(caught.value)
    assert "arm.yaml -> " in message and "_mid.yaml -> " in message and "_gone.yaml" in message


@pytest.mark.parametrize("value", ["3", "''", "[a.yaml]", "{path: a.yaml}"])
def test_base_must_be_a_path(tmp_path: Path, value: str) -> None:
    _write(tmp_path / "arm.yaml", f"base: {value}\n" + RECIPE)
    with pytest.raises(ConfigError, match="'base' must be a path"):
        load_config(tmp_path / "arm.yaml")


def test_errors_in_a_base_name_the_base_file(tmp_path: Path) -> None:
    _write(tmp_path / "_base.yaml", RECIPE + "optimiser: {}\n")
    _write(tmp_path / "arm.yaml", "base: _base.yaml\n")
    with pytest.raises(ConfigError, match=r"_base\.yaml: unknown top-level key\(s\) \['optimiser'\]"):
        load_config(tmp_path / "arm.yaml")


def test_a_child_key_unknown_to_the_schema_is_still_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "_base.yaml", RECIPE)
    child = _write(tmp_path / "arm.yaml", "base: _base.yaml\ntraining: {max_step: 3}\n")
    with pytest.raises(ConfigError, match="max_step"):
        load_config(child)


def test_config_differences_names_the_changed_keys_and_ignores_budget_and_provenance() -> None:
    from implicit_slots.config import CONFIGS_DIR, config_differences

    path = CONFIGS_DIR / "slate_clevr_lite.yaml"
    reference = load_config(path)
    assert config_differences(reference, load_config(path, ["training.max_steps=9"])) == []
    changed = load_config(path, ["training.optimizer.lr=0.01", "model.slot_attention.num_iterations=3"])
    assert config_differences(reference, changed) == [
        "model.slot_attention.num_iterations",
        "training.optimizer.lr",
    ]
    assert config_differences(reference, changed, ignore=("model",)) == ["training.optimizer.lr"]


def test_describe_keys_names_the_first_few_and_counts_the_rest() -> None:
    from implicit_slots.config import describe_keys

    assert describe_keys(["a", "b"]) == "a, b"
    assert describe_keys(["a", "b", "c"], limit=2) == "a, b and 1 more"
