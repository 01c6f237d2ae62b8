"""Shared fixtures of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from implicit_slots.config import load_config
from implicit_slots.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_slate_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SLATE run folder (16 px images, 2 slot-attention iterations) trained for one step."""
    overrides = [
        "model.image_size=16",
        "model.vocab_size=64",
        "model.dvae_hidden_channels=4",
        "model.d_model=16",
        "model.num_heads=2",
        "model.num_decoder_blocks=1",
        "model.slot_attention.slot_dim=16",
        "model.slot_attention.mlp_hidden_dim=16",
        "model.slot_attention.num_iterations=2",
        "data.image_size=16",
        "data.cache_dir=null",
        "data.num_samples.train=4",
        "data.num_samples.test=4",
        "training.max_steps=1",
        "training.batch_size=2",
        "training.num_threads=1",
        "diagnostics.every=0",
    ]
    config = load_config(ROOT / "configs" / "slate_clevr_lite.yaml", overrides)
    run_dir = tmp_path_factory.mktemp("tiny-slate") / "run"
    train(config, run_dir)
    return run_dir
