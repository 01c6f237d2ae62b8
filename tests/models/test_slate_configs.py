"""Every SLATE config file loads, builds its model and (the main job's) trains one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from implicit_slots.config import load_config
from implicit_slots.models import get_model_spec
from implicit_slots.models.slate import Slate

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("slate_*.yaml"))


def test_the_four_slate_configs_exist() -> None:
    assert [path.name for path in CONFIGS] == [
        "slate_clevr_lite.yaml",
        "slate_clevr_mirror.yaml",
        "slate_coco.yaml",
        "slate_shapestacks.yaml",
    ]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_implicit_slate(path: Path) -> None:
    config = load_config(path)
    assert config.model.name == "slate"
    model = get_model_spec("slate").build(config.model.config)
    assert isinstance(model, Slate)
    assert model.image_size == config.data.image_size
    assert model.slot_attention.variant == "IN" and model.slot_attention.num_iterations == 7
    assert set(config.training.optimizer.groups) <= set(model.parameter_groups())
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
