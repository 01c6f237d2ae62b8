"""Every SLATE config file loads, builds its model and (the main job's) trains one step; so do both stages of
the two-stage main job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from implicit_slots.config import load_config
from implicit_slots.models import get_model_spec
from implicit_slots.models.slate import DvaeConfig, DvaeModel, Slate, build_dvae

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("slate_*.yaml"))


def test_the_five_slate_configs_exist() -> None:
    assert [path.name for path in CONFIGS] == [
        "slate_clevr_lite.yaml",
        "slate_clevr_lite_two_stage.yaml",
        "slate_clevr_mirror.yaml",
        "slate_coco.yaml",
        "slate_shapestacks.yaml",
    ]


@pytest.fixture(scope="module")
def main_job_dvae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dVAE of the main job's sizes saved as a checkpoint (what the two-stage config reads)."""
    config = load_config(CONFIGS[0].parent / "dvae_clevr_lite.yaml")
    model = build_dvae(config.model.config)
    path = tmp_path_factory.mktemp("dvae") / "dvae.pt"
    torch.save({"model": model.state_dict(), "config": {"model": {"name": "dvae", "image_size": 64}}}, path)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_implicit_slate(path: Path, main_job_dvae: Path) -> None:
    # The two-stage main job's SLATE stage is given its dVAE by main-job (model.dvae_init).
    two_stage = path.name == "slate_clevr_lite_two_stage.yaml"
    config = load_config(path, [f"model.dvae_init={main_job_dvae}"] if two_stage else [])
    assert config.model.name == "slate"
    model = get_model_spec("slate").build(config.model.config)
    assert isinstance(model, Slate)
    assert model.image_size == config.data.image_size
    assert model.slot_attention.variant == "IN" and model.slot_attention.num_iterations == 7
    assert set(config.training.optimizer.groups) <= set(model.parameter_groups())
    if config.model.config.freeze_dvae:  # argmax tokens of a frozen dVAE: no temperature to anneal
        assert model.parameter_groups()["dvae"] == []
    else:
        assert "gumbel_temperature" in config.training.hyperparameter_schedules  # SLATE's tau anneal
    assert set(config.training.hyperparameter_schedules) <= set(model.hyperparameter_names())


def test_main_job_config_trains_one_step() -> None:
    config = load_config(CONFIGS[0])
    model = get_model_spec("slate").build(config.model.config).train()
    image = torch.rand(2, 3, 64, 64)
    loss = model.compute_loss(model({"image": image}), {"image": image}).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameter_groups()["dvae"])


def test_the_two_stage_main_job_trains_one_step_of_each_stage(tmp_path: Path) -> None:
    image = torch.rand(2, 3, 64, 64)
    dvae_config = load_config(CONFIGS[0].parent / "dvae_clevr_lite.yaml")
    dvae = build_dvae(dvae_config.model.config).train()
    assert isinstance(dvae_config.model.config, DvaeConfig) and isinstance(dvae, DvaeModel)
    assert dvae_config.diagnostics.every == 0  # a dVAE has no slot attention
    loss = dvae.compute_loss(dvae({"image": image}), {"image": image}).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in dvae.parameters())
    path = tmp_path / "dvae.pt"
    torch.save({"model": dvae.state_dict(), "config": {"model": {"name": "dvae", "image_size": 64}}}, path)

    config = load_config(CONFIGS[0].parent / "slate_clevr_lite_two_stage.yaml", [f"model.dvae_init={path}"])
    model = get_model_spec("slate").build(config.model.config).train()
    loss = model.compute_loss(model({"image": image}), {"image": image}).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.parameter_groups()["dvae"] == [] and all(p.grad is None for p in model.dvae.parameters())
    torch.testing.assert_close(model.dvae.state_dict(), dvae.dvae.state_dict(), rtol=0, atol=0)
