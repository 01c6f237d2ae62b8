"""The trained models that ship with the package, each a weights file plus a model card.

``files/NAME.pt`` is a weights file (:mod:`implicit_slots.pretrained.weights`); ``files/NAME.json`` is its
model card: what was trained on what, how, at which commit, and what it scores with the command that
reproduces the score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ModelCard", "available_pretrained", "get_card", "weights_path"]

_FILES = "files"


@dataclass(frozen=True)
class ModelCard:
    """A shipped model's card (``files/NAME.json``).

    Attributes:
        name: the name ``load_pretrained`` takes.
        description: one sentence: what the model is.
        model: the model's registry name (``slate``, ``autoencoder``, ``set_prediction``).
        dataset: the dataset it was trained on (registry name) and its options in words.
        steps: training steps.
        seed: training seed.
        training_command: the command that trained it.
        commit: the git commit of implicit-slots it was trained at.
        evaluation_command: the command whose numbers are in ``metrics``.
        metrics: metric name -> value measured with ``evaluation_command``.
        notes: what a user should know (limits, known failure cases).
    """

    name: str
    description: str
    model: str
    dataset: str
    steps: int
    seed: int
    training_command: str
    commit: str
    evaluation_command: str
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """Read a card; unknown or missing fields are an error naming them."""
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"model card: unknown field(s) {sorted(unknown)}")
        return cls(**data)

    def to_markdown(self, size_bytes: int | None = None) -> str:
        """The card as a short Markdown section."""
        lines = [f"### {self.name}", "", self.description, ""]
        rows = [
            ("model", f"`{self.model}`"),
            ("data", self.dataset),
            ("steps / seed", f"{self.steps} / {self.seed}"),
            ("trained with", f"`{self.training_command}`"),
            ("at commit", f"`{self.commit}`"),
        ]
        if size_bytes is not None:
            rows.append(("weights", f"{size_bytes / 2**20:.2f} MiB"))
        lines += ["| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in rows], ""]
        lines += [f"Evaluation (`{self.evaluation_command}`):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in self.metrics.items()]
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"


def _folder() -> Path:
    return Path(str(resources.files("implicit_slots.pretrained").joinpath(_FILES)))


def available_pretrained() -> list[str]:
    """Names of the shipped models (those with both a weights file and a card)."""
    folder = _folder()
    return sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.pt").is_file())


def get_card(name: str) -> ModelCard:
    """The card of a shipped model; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in available_pretrained():
        raise KeyError(f"no shipped model {name!r}; shipped: {available_pretrained()}")
    return ModelCard.from_json(json.loads((_folder() / f"{name}.json").read_text()))


def weights_path(name: str) -> Path:
    """The weights file of a shipped model."""
    get_card(name)
    return _folder() / f"{name}.pt"
