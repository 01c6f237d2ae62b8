"""Test-only model, dataset and config writer for the training-engine tests (not collected by pytest).

``tiny-test`` is a small conv encoder + the project's SlotAttention + a per-slot linear decoder with
alpha-compositing, registered under its own name so these tests depend on no other helper's model. It is
registered only while a test of tests/training runs (conftest.py) or in the subprocess driver.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import Dataset

from implicit_slots.config import DataConfig
from implicit_slots.models import LossOutput, ModelOutput, ObjectCentricModel, register_model
from implicit_slots.slot_attention import SlotAttention

MODEL_NAME = "tiny-test"


@dataclass
class TinyConfig:
    """Schema of the tiny model (``model:`` section)."""

    image_size: int = 8
    feature_dim: int = 16
    num_slots: int = 3
    slot_dim: int = 16
    mlp_hidden_dim: int = 16
    num_iterations: int = 2
    variant: str = "IN"
    delay_s: float = 0.0  # sleep per training forward (lets a test kill a run mid-way)
    poison_loss_calls: list[int] = field(default_factory=list)  # training forwards (1-based) with NaN loss
    poison_grad_calls: list[int] = field(default_factory=list)  # ... with a finite loss but NaN gradient
    signal_on_call: int = 0  # send SIGTERM to this process during this training forward (0: never)


@dataclass
class TinyOutput(ModelOutput):
    reconstruction: Tensor  # (B, 3, H, W)


class TinyModel(ObjectCentricModel):
    """Conv encoder -> SlotAttention -> per-slot linear RGB + alpha decoder."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        s, f = config.image_size, config.feature_dim
        self.encoder = nn.Sequential(nn.Conv2d(3, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 1))
        self.position = nn.Parameter(torch.zeros(1, s * s, f))
        self.slot_attention = SlotAttention(
            f,
            config.num_slots,
            config.slot_dim,
            config.mlp_hidden_dim,
            config.num_iterations,
            variant=config.variant,
        )
        self.decoder = nn.Linear(config.slot_dim, 4 * s * s)
        self.temperature = 1.0  # scheduled hyperparameter (divides the alpha logits)
        self.training_calls = 0

    def forward(self, batch: dict[str, Tensor]) -> TinyOutput:
        image = batch["image"]  # (B, 3, S, S)
        b, _, s, _ = image.shape
        features = self.encoder(image).flatten(2).transpose(1, 2) + self.position  # (B, S*S, F)
        sa = self.slot_attention(features)
        decoded = self.decoder(sa.slots).view(b, -1, 4, s, s)  # (B, K, 4, S, S)
        alpha = torch.softmax(decoded[:, :, 3:] / self.temperature, dim=1)  # (B, K, 1, S, S)
        reconstruction = (alpha * torch.sigmoid(decoded[:, :, :3])).sum(dim=1)  # (B, 3, S, S)
        if self.training:
            self.training_calls += 1
            if self.config.delay_s:
                time.sleep(self.config.delay_s)
            if self.training_calls == self.config.signal_on_call:
                os.kill(os.getpid(), signal.SIGTERM)
        return TinyOutput(slot_attention=sa, reconstruction=reconstruction)

    def compute_loss(self, output: ModelOutput, batch: dict[str, Tensor]) -> LossOutput:
        assert isinstance(output, TinyOutput)
        mse = F.mse_loss(output.reconstruction, batch["image"])
        loss = mse
        if self.training and self.training_calls in self.config.poison_loss_calls:
            loss = loss * float("nan")
        if self.training and self.training_calls in self.config.poison_grad_calls:
            zero = self.position.sum() - self.position.sum().detach()  # value 0, gradient 1
            loss = loss + 0.0 * torch.sqrt(zero * 0.0)  # finite value, NaN gradient (sqrt'(0) = inf)
        return LossOutput(loss=loss, terms={"mse": mse.detach()})

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = [*self.encoder.parameters(), self.position]
        ids = {id(p) for p in encoder}
        return {"encoder": encoder, "main": [p for p in self.parameters() if id(p) not in ids]}

    def hyperparameter_names(self) -> tuple[str, ...]:
        return ("temperature",)

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        assert isinstance(output, TinyOutput)
        return {"reconstruction": output.reconstruction.clamp(0, 1)}


def build_tiny(config: TinyConfig) -> TinyModel:
    return TinyModel(config)


def register_tiny_model() -> None:
    """Register ``tiny-test`` (idempotent); tests/training/conftest.py removes it after each test."""
    register_model(MODEL_NAME, TinyConfig, build_tiny)


def unregister_tiny_model() -> None:
    """Remove ``tiny-test`` so tests elsewhere that walk the registry never see it."""
    from implicit_slots.models import registry

    registry._REGISTRY.pop(MODEL_NAME, None)


class TinyImages(Dataset):
    """Deterministic random blobs: sample ``i`` of a split is a function of (seed, split, i)."""

    def __init__(self, num_samples: int, image_size: int, seed: int, split: str) -> None:
        offset = {"train": 0, "val": 1, "test": 2}[split]
        generator = torch.Generator().manual_seed(1000 * seed + offset)
        self.images = torch.rand(num_samples, 3, image_size, image_size, generator=generator)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index]}


def tiny_dataset_factory(data: DataConfig, split: str) -> Dataset:
    """The engine's dataset hook for ``data.name: tiny-images``."""
    if data.name != "tiny-images":
        raise KeyError(f"unknown dataset {data.name!r}; valid: ['tiny-images']")
    num_samples = getattr(data.num_samples, split) or 16
    return TinyImages(num_samples, data.image_size, data.seed, split)


def write_config(path: Path, **sections: Any) -> Path:
    """A tiny-test config file; keyword arguments update the sections (``training={...}``)."""
    config: dict[str, Any] = {
        "model": {"name": MODEL_NAME},
        "data": {"name": "tiny-images", "image_size": 8, "num_samples": {"train": 16, "val": 8, "test": 8}},
        "training": {
            "max_steps": 6,
            "batch_size": 4,
            "seed": 0,
            "checkpoint_every": 3,
            "log_every": 1,
            "device": "cpu",
            "num_threads": 1,
            "optimizer": {"lr": 3e-3},
        },
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path
