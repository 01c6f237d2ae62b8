"""Validation lives with the schema: each section checks itself, validators never edit, one default per
setting."""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path

import pytest

from implicit_slots.config import (
    ConfigError,
    DataConfig,
    DiagnosticsConfig,
    GradClipConfig,
    LRDecayConfig,
    OptimizerConfig,
    ParamGroupConfig,
    TrainingConfig,
    ValidationConfig,
    load_config,
)
from implicit_slots.fixed_point import solve
from implicit_slots.fixed_point.gradients import (
    DEFAULT_BACKWARD_MAX_ITERATIONS,
    ImplicitGradient,
    get_gradient,
)
from implicit_slots.models.slate import SlateConfig
from implicit_slots.slot_attention import SlotAttentionConfig
from implicit_slots.slot_attention.module import SlotAttention

MAIN_JOB = Path(__file__).resolve().parents[1] / "configs" / "slate_clevr_lite.yaml"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (DataConfig(name="sprites", image_size=0), "data.image_size"),
        (OptimizerConfig(betas=[0.9]), "training.optimizer.betas"),
        (OptimizerConfig(groups={"dvae": ParamGroupConfig(lr=-1.0)}), "training.optimizer.groups.dvae.lr"),
        (OptimizerConfig(betas=[1.5, 0.999]), "training.optimizer.betas"),
        (OptimizerConfig(eps=-1e-8), "training.optimizer.eps"),
        (OptimizerConfig(weight_decay=-0.1), "training.optimizer.weight_decay"),
        (
            OptimizerConfig(groups={"dvae": ParamGroupConfig(weight_decay=-1.0)}),
            "training.optimizer.groups.dvae.weight_decay",
        ),
        (GradClipConfig(norm="l2", max_norm=0.0), "training.grad_clip.max_norm"),
        (LRDecayConfig(kind="exponential", half_life=0), "training.lr_decay.half_life"),
        (ValidationConfig(num_batches=0), "training.validation.num_batches"),
        (TrainingConfig(batch_size=0), "training.batch_size"),
        (TrainingConfig(lr_decay=LRDecayConfig(kind="plateau")), "training.validation.every"),
        (DiagnosticsConfig(jacobian_iterations=0), "diagnostics.jacobian_iterations"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_each_section_checks_itself_and_names_the_key(section: object, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^where: key '{key}': "):
        section.validate("where")  # type: ignore[attr-defined]


def test_a_file_or_override_that_is_not_yaml_is_one_config_error(tmp_path: Path) -> None:
    """Invalid YAML in an override, a binary file, a folder: a ConfigError naming it, not a traceback."""
    with pytest.raises(ConfigError, match=r"^override 'training\.optimizer\.betas=\[0\.9': not valid YAML"):
        load_config(MAIN_JOB, ["training.optimizer.betas=[0.9"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name: [slate\ndata: {}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(broken)
    assert "\n" not in str(raised.value)
    assert re.search(
        r"broken\.yaml: not valid YAML: did not find expected .* at line 3, column 5$", str(raised.value)
    )
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x03\xcf\xff" * 8)
    with pytest.raises(ConfigError, match=r"weights\.yaml: not a text file"):
        load_config(binary)
    with pytest.raises(ConfigError, match=r"config file '.*' is a folder, not a file"):
        load_config(tmp_path)


def test_validators_never_edit() -> None:
    config = load_config(MAIN_JOB)
    before = copy.deepcopy(config)
    config.validate("main job")
    assert config == before
    # "none" is normalised while loading (an explicit step), never by a validator.
    with pytest.raises(ConfigError, match=r"key 'training.grad_clip.norm': invalid value 'none'"):
        GradClipConfig(norm="none").validate("python")
    loaded = load_config(MAIN_JOB, ["training.grad_clip.norm=none", "training.lr_decay.kind=none"])
    assert loaded.training.grad_clip.norm is None and loaded.training.lr_decay.kind is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.vocab_size=0", r"model\.vocab_size must be a positive integer, got 0"),
        ("model.dropout=1.0", r"model\.dropout must be in \[0, 1\), got 1\.0"),
        (
            "model.slot_attention.num_iterations=0",
            r"model\.slot_attention\.num_iterations must be a positive",
        ),
        ("model.slot_attention.variant=XY", r"model\.slot_attention\.variant: unknown variant 'XY'; valid:"),
    ],
)
def test_model_section_is_checked_when_loading(override: str, message: str) -> None:
    """Model ranges are the model config's own rule, reported by ``load_config`` with the file."""
    with pytest.raises(ConfigError, match=rf"slate_clevr_lite\.yaml \+ overrides: ({message})"):
        load_config(MAIN_JOB, [override])


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "config_file",
    ["autoencoder_tetrominoes.yaml", "set_prediction_clevr_lite.yaml", "slate_clevr_lite.yaml"],
)
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.slot_attention.variant=XY", r"model\.slot_attention\.variant: unknown variant 'XY'; valid:"),
        ("model.slot_attention.solver=newton", r"model\.slot_attention\.solver: unknown solver 'newton'"),
        ("model.slot_attention.gradient=adjoint", r"model\.slot_attention\.gradient: unknown gradient"),
        ("model.slot_attention.backward_solver=x", r"model\.slot_attention\.backward_solver: unknown solver"),
        ("model.slot_attention.return_iterate=first", r"model\.slot_attention\.return_iterate: invalid"),
        ("model.slot_attention.num_slots=0", r"model\.slot_attention\.num_slots must be a positive"),
    ],
)
def test_every_slot_attention_model_checks_its_section_when_loading(
    config_file: str, override: str, message: str
) -> None:
    """Not a KeyError or a torch error from deep inside the model builder when training starts."""
    with pytest.raises(ConfigError, match=rf"{config_file} \+ overrides: {message}"):
        load_config(CONFIGS / config_file, [override])


@pytest.mark.parametrize(
    ("config_file", "override", "message"),
    [
        (
            "autoencoder_tetrominoes.yaml",
            "model.encoder_channels=-1",
            r"model\.encoder_channels must be a posi",
        ),
        (
            "autoencoder_tetrominoes.yaml",
            "model.decoder_hidden_layers=-1",
            r"model\.decoder_hidden_layers must",
        ),
        (
            "set_prediction_clevr_lite.yaml",
            "model.head_hidden_dim=0",
            r"model\.head_hidden_dim must be a posi",
        ),
        ("dvae_clevr_lite.yaml", "model.vocab_size=0", r"model\.vocab_size must be a positive integer"),
        ("dvae_clevr_lite.yaml", "model.gumbel_temperature=0", r"model\.gumbel_temperature must be > 0"),
    ],
)
def test_model_sizes_are_checked_when_loading(config_file: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{config_file} \+ overrides: {message}"):
        load_config(CONFIGS / config_file, [override])


@pytest.mark.parametrize(
    "config_file", ["autoencoder_tetrominoes.yaml", "dvae_clevr_lite.yaml", "slate_clevr_lite.yaml"]
)
def test_a_model_image_size_other_than_the_data_is_named_when_loading(config_file: str) -> None:
    """Not a shape error at the first training step, after the run folder was written."""
    message = r"key 'data\.image_size': 8 differs from model\.image_size \(\d+\)"
    with pytest.raises(ConfigError, match=rf"{config_file} \+ overrides: {message}"):
        load_config(CONFIGS / config_file, ["data.image_size=8"])


def test_model_configs_validate_themselves() -> None:
    SlateConfig().validate()
    with pytest.raises(ValueError, match=r"model\.slot_attention\.slot_dim must be a positive integer"):
        SlotAttentionConfig(slot_dim=0).validate()
    with pytest.raises(ValueError, match=r"model\.slot_attention\.initialization: invalid value 'zeros'"):
        SlateConfig(slot_attention=SlotAttentionConfig(initialization="zeros")).validate()


def _default(function: object, name: str) -> object:
    return inspect.signature(function).parameters[name].default  # type: ignore[arg-type]


def test_one_default_for_the_backward_solver_budget() -> None:
    defaults = {
        "SlotAttentionConfig": SlotAttentionConfig().backward_max_iterations,
        "SlotAttention": _default(SlotAttention.__init__, "backward_max_iterations"),
        "solve": _default(solve, "backward_max_iterations"),
        "get_gradient": _default(get_gradient, "backward_max_iterations"),
        "ImplicitGradient": _default(ImplicitGradient.__init__, "max_iterations"),
    }
    assert set(defaults.values()) == {DEFAULT_BACKWARD_MAX_ITERATIONS}, defaults
    tolerances = {
        SlotAttentionConfig().backward_tolerance,
        _default(SlotAttention.__init__, "backward_tolerance"),
        _default(solve, "backward_tolerance"),
        _default(get_gradient, "backward_tolerance"),
        _default(ImplicitGradient.__init__, "tolerance"),
    }
    assert len(tolerances) == 1, tolerances


def test_removed_model_keys_load_when_off_and_are_named_otherwise(tmp_path: Path) -> None:
    """Run configs saved before token_dropout / scheduled_sampling were removed still load."""
    path = tmp_path / "old.yaml"
    path.write_text(
        "model: {name: slate, token_dropout: 0.0, scheduled_sampling: 0.0}\ndata: {name: clevr-lite}\n"
    )
    assert load_config(path).model.name == "slate"
    path.write_text("model: {name: slate, token_dropout: 0.3}\ndata: {name: clevr-lite}\n")
    with pytest.raises(ConfigError, match=r"model\.token_dropout.*was removed"):
        load_config(path)
