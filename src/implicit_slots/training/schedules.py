"""Learning-rate and hyperparameter schedules: pure functions of the step, plus the plateau rule's state.

Steps are 0-based: step ``t`` is the ``t``-th optimizer update. Every schedule is a pure function of
``t`` except the plateau rule, whose state (:class:`PlateauState`) is saved in checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from implicit_slots.config import HyperparameterScheduleConfig, OptimizerConfig

__all__ = [
    "LearningRateSchedule",
    "PlateauState",
    "exponential_decay_factor",
    "scheduled_value",
    "warmup_factor",
]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor ``min(1, (step + 1) / warmup_steps)``; 1 when ``warmup_steps`` is 0.

    The ``+ 1`` follows official SLATE: the first update already has a non-zero learning rate, and the
    factor reaches 1 at step ``warmup_steps - 1``.
    """
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def exponential_decay_factor(step: int, half_life: int, start_step: int = 0) -> float:
    """``0.5 ** ((step - start_step) / half_life)`` from ``start_step`` on, 1 before it."""
    if half_life <= 0:
        raise ValueError(f"half_life must be > 0, got {half_life}")
    return 0.5 ** (max(0, step - start_step) / half_life)


def scheduled_value(kind: str, start: float, end: float, steps: int, start_step: int, step: int) -> float:
    """Value of a hyperparameter schedule at ``step``.

    With ``u = clamp((step - start_step) / steps, 0, 1)``: ``constant`` -> ``start``; ``linear`` ->
    ``start + (end - start) u``; ``cosine`` -> ``end + (start - end)(1 + cos(pi u)) / 2``;
    ``exponential`` -> ``start (end / start) ** u``.

    SLATE's Gumbel temperature ``0.45 cos(pi t / 30000) + 0.55`` (then 0.1) is ``cosine`` with start 1.0,
    end 0.1, steps 30000.
    """
    if kind == "constant":
        return start
    if steps <= 0:
        raise ValueError(f"schedule {kind!r} needs steps > 0, got {steps}")
    u = min(1.0, max(0.0, (step - start_step) / steps))
    if kind == "linear":
        return start + (end - start) * u
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * u))
    if kind == "exponential":
        if start <= 0 or end <= 0:
            raise ValueError(f"exponential schedule needs start, end > 0, got {start}, {end}")
        return start * (end / start) ** u
    raise ValueError(
        f"unknown schedule kind {kind!r}; valid: ['constant', 'linear', 'cosine', 'exponential']"
    )


def hyperparameter_values(schedules: dict[str, HyperparameterScheduleConfig], step: int) -> dict[str, float]:
    """Every scheduled model hyperparameter at ``step``."""
    return {
        name: scheduled_value(s.kind, s.start, s.end, s.steps, s.start_step, step)
        for name, s in schedules.items()
    }


@dataclass
class PlateauState:
    """The plateau rule (official SLATE): multiply the decay factor by ``factor`` after ``patience``
    consecutive validations without improvement.

    Attributes:
        patience: validations without improvement before decaying.
        factor: multiplier applied at each plateau.
        min_delta: improvement means ``loss < best - min_delta``.
        best: best validation loss so far (inf before the first).
        num_bad: consecutive validations without improvement.
        decay: current decay factor (starts at 1).
    """

    patience: int
    factor: float
    min_delta: float = 0.0
    best: float = math.inf
    num_bad: int = 0
    decay: float = 1.0

    def update(self, validation_loss: float) -> bool:
        """Record one validation loss; returns True when the decay factor was just reduced."""
        if validation_loss < self.best - self.min_delta:
            self.best = validation_loss
            self.num_bad = 0
            return False
        self.num_bad += 1
        if self.num_bad >= self.patience:
            self.decay *= self.factor
            self.num_bad = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (saved in checkpoints)."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.best, self.num_bad, self.decay = (
            float(state["best"]),
            int(state["num_bad"]),
            float(state["decay"]),
        )


class LearningRateSchedule:
    """Per-group learning rates: ``lr_g(t) = base_g * warmup_factor(t, warmup_g) * decay(t)``.

    ``decay`` is 1 (no decay), :func:`exponential_decay_factor` or the plateau rule's factor; it is
    shared by all groups, as in official SLATE. Warm-up is per group (SLATE warms up only ``main``).

    Args:
        optimizer: the ``training.optimizer`` config (base rates, warm-up, per-group overrides).
        group_names: the model's parameter-group names.
        decay_kind: None, ``"exponential"`` or ``"plateau"``.
        half_life: exponential decay half-life in steps.
        decay_start_step: exponential decay starts here.
        plateau: the plateau rule's state (required for ``"plateau"``).
    """

    def __init__(
        self,
        optimizer: OptimizerConfig,
        group_names: list[str],
        *,
        decay_kind: str | None = None,
        half_life: int = 0,
        decay_start_step: int = 0,
        plateau: PlateauState | None = None,
    ) -> None:
        self.base_lr: dict[str, float] = {}
        self.warmup_steps: dict[str, int] = {}
        for name in group_names:
            override = optimizer.groups.get(name)
            lr = override.lr if override is not None and override.lr is not None else optimizer.lr
            warmup = optimizer.warmup_steps
            if override is not None and override.warmup_steps is not None:
                warmup = override.warmup_steps
            self.base_lr[name], self.warmup_steps[name] = lr, warmup
        if decay_kind == "plateau" and plateau is None:
            raise ValueError("decay_kind 'plateau' needs a PlateauState")
        self.decay_kind = decay_kind
        self.half_life = half_life
        self.decay_start_step = decay_start_step
        self.plateau = plateau

    def decay_factor(self, step: int) -> float:
        """The decay factor shared by all groups at ``step``."""
        if self.decay_kind == "exponential":
            return exponential_decay_factor(step, self.half_life, self.decay_start_step)
        if self.decay_kind == "plateau":
            assert self.plateau is not None
            return self.plateau.decay
        return 1.0

    def learning_rates(self, step: int) -> dict[str, float]:
        """Learning rate of every group at ``step``."""
        decay = self.decay_factor(step)
        return {
            name: base * warmup_factor(step, self.warmup_steps[name]) * decay
            for name, base in self.base_lr.items()
        }
