"""Config loading: layered values, and one clear error naming the source and key for every bad input."""

from pathlib import Path

import pytest
import yaml
from tiny_training_setup import MODEL_NAME, TinyConfig, write_config

from implicit_slots.config import ConfigError, apply_overrides, load_config, save_config


def test_file_then_overrides_and_model_schema(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", model={"name": MODEL_NAME, "num_slots": 5})
    config = load_config(
        path, ["training.max_steps=11", "model.num_iterations=4", "training.optimizer.lr=1e-4"]
    )
    assert config.model.name == MODEL_NAME
    assert isinstance(config.model.config, TinyConfig)
    assert (config.model.config.num_slots, config.model.config.num_iterations) == (5, 4)
    assert config.training.max_steps == 11
    assert config.training.optimizer.lr == 1e-4  # YAML-1.1 "1e-4" is a float here, not a string
    assert config.training.batch_size == 4  # from the file
    assert config.training.precision == "fp32"  # dataclass default


def test_save_then_load_is_identity(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        training={
            "grad_clip": {"norm": "inf", "max_norm": 1.0},
            "optimizer": {
                "lr": 1e-4,
                "warmup_steps": 30000,
                "groups": {"encoder": {"lr": 3e-4, "warmup_steps": 0}},
            },
            "lr_decay": {"kind": "exponential", "half_life": 250000},
            "hyperparameter_schedules": {
                "temperature": {"kind": "cosine", "start": 1.0, "end": 0.1, "steps": 30000}
            },
        },
    )
    config = load_config(path)
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["model"]["name"] == MODEL_NAME


def test_apply_overrides_for_python_callers(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml"))
    changed = apply_overrides(config, {"training.seed": 7, "model.num_slots": 2})
    assert (changed.training.seed, changed.model.config.num_slots) == (7, 2)
    assert config.training.seed == 0  # the original is untouched
    with pytest.raises(ConfigError, match=r"key .training.sed."):
        apply_overrides(config, {"training.sed": 1})


def test_none_switches_are_normalised_to_off(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path / "c.yaml"), ["training.grad_clip.norm=none", "training.lr_decay.kind=none"]
    )
    assert config.training.grad_clip.norm is None and config.training.lr_decay.kind is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "training.max_step=3",
            r"override 'training.max_step=3': key 'training.max_step': Key 'max_step' not in",
        ),
        (
            "training.max_steps=ten",
            r"key 'training.max_steps': Value 'ten' of type 'str' could not be converted",
        ),
        ("model.num_slot=3", r"key 'model.num_slot': Key 'num_slot' not in 'TinyConfig'"),
        ("model.num_slots=many", r"key 'model.num_slots': Value 'many'"),
        ("model.name=nope", r"key 'model.name': unknown model 'nope'; valid models: \[.*'tiny-test'"),
        ("trainer.max_steps=3", r"unknown key 'trainer.max_steps'; top-level sections"),
        ("training.optimizer.groups.encoder.lrr=1", r"key 'training.optimizer.groups.encoder.lrr'"),
        (
            "training.grad_clip.norm=l1",
            r"key 'training.grad_clip.norm': invalid value 'l1'; valid: \['l2', 'inf', 'null'\]",
        ),
        (
            "training.precision=fp16",
            r"key 'training.precision': invalid value 'fp16'; valid: \['fp32', 'bf16'\]",
        ),
        ("training.lr_decay.kind=plateau", r"key 'training.validation.every': must be > 0 when"),
        ("training.batch_size=0", r"key 'training.batch_size': must be >= 1, got 0"),
        ("training.max_steps", r"expected KEY=VALUE"),
        ("data.name=null", r"key 'data.name': Incompatible value 'None'"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path / "c.yaml"), [override])


def test_bad_file_values_name_the_file_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", training={"log_evry": 5})
    with pytest.raises(
        ConfigError, match=r"bad.yaml: key 'training.log_evry': Key 'log_evry' not in 'TrainingConfig'"
    ):
        load_config(path)
    path = write_config(tmp_path / "bad2.yaml", model={"name": MODEL_NAME, "slot_dim": "wide"})
    with pytest.raises(ConfigError, match=r"bad2.yaml: key 'model.slot_dim': Value 'wide'"):
        load_config(path)
    (tmp_path / "bad3.yaml").write_text("model: {name: tiny-test}\nexperiment: {}\n")
    with pytest.raises(ConfigError, match=r"bad3.yaml: unknown top-level key\(s\) \['experiment'\]"):
        load_config(tmp_path / "bad3.yaml")
    (tmp_path / "bad4.yaml").write_text("data: {name: x}\n")
    with pytest.raises(ConfigError, match=r"bad4.yaml: required key 'model.name' has no value"):
        load_config(tmp_path / "bad4.yaml")
    (tmp_path / "bad5.yaml").write_text("model: {name: tiny-test}\n")
    with pytest.raises(ConfigError, match=r"required key 'data.name' has no value"):
        load_config(tmp_path / "bad5.yaml")
    with pytest.raises(ConfigError, match=r"config file '.*missing.yaml' does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_without_file(tmp_path: Path) -> None:
    config = load_config(None, [f"model.name={MODEL_NAME}", "data.name=tiny-images", "data.image_size=8"])
    assert config.model.config == TinyConfig()
