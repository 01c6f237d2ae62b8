"""Schedules on hand-computed values: warm-up, exponential decay, hyperparameter schedules, plateau rule."""

import math

import pytest

from implicit_slots.config import OptimizerConfig, ParamGroupConfig
from implicit_slots.training.schedules import (
    LearningRateSchedule,
    PlateauState,
    exponential_decay_factor,
    scheduled_value,
    warmup_factor,
)


def test_warmup_factor_hand_values() -> None:
    # SLATE: (t + 1) / warmup, capped at 1; warm-up 0 is off.
    assert warmup_factor(0, 4) == 0.25
    assert warmup_factor(1, 4) == 0.5
    assert warmup_factor(3, 4) == 1.0
    assert warmup_factor(100, 4) == 1.0
    assert warmup_factor(0, 0) == 1.0


def test_exponential_decay_hand_values() -> None:
    assert exponential_decay_factor(0, 100) == 1.0
    assert exponential_decay_factor(100, 100) == 0.5
    assert exponential_decay_factor(250, 100) == pytest.approx(0.5**2.5)
    # Starts after start_step (OCLF-style "decay after warm-up").
    assert exponential_decay_factor(50, 100, start_step=50) == 1.0
    assert exponential_decay_factor(150, 100, start_step=50) == 0.5
    with pytest.raises(ValueError, match="half_life"):
        exponential_decay_factor(1, 0)


def test_slate_gumbel_temperature_is_the_cosine_schedule() -> None:
    # SLATE: tau(t) = 0.45 cos(pi t / 30000) + 0.55 for t < 30000, then 0.1.
    for t in (0, 1, 7500, 15000, 29999, 30000, 45000):
        expected = 0.45 * math.cos(math.pi * t / 30000) + 0.55 if t < 30000 else 0.1
        assert scheduled_value("cosine", 1.0, 0.1, 30000, 0, t) == pytest.approx(expected, abs=1e-12)
    assert scheduled_value("cosine", 1.0, 0.1, 30000, 0, 15000) == pytest.approx(0.55)


def test_linear_exponential_constant_and_start_step() -> None:
    assert scheduled_value("linear", 2.0, 4.0, 10, 0, 5) == 3.0
    assert scheduled_value("linear", 2.0, 4.0, 10, 10, 5) == 2.0  # before start_step
    assert scheduled_value("linear", 2.0, 4.0, 10, 10, 15) == 3.0
    assert scheduled_value("linear", 2.0, 4.0, 10, 10, 99) == 4.0
    assert scheduled_value("exponential", 1.0, 0.01, 10, 0, 5) == pytest.approx(0.1)
    assert scheduled_value("constant", 0.7, 99.0, 0, 0, 12345) == 0.7
    with pytest.raises(ValueError, match="unknown schedule kind 'sine'"):
        scheduled_value("sine", 1.0, 0.0, 10, 0, 1)


def test_learning_rates_per_group_warmup_and_shared_decay() -> None:
    # SLATE: dvae 3e-4 without warm-up, main 1e-4 with warm-up; STEVE-like half-life decay on both.
    optimizer = OptimizerConfig(
        lr=1e-4, warmup_steps=4, groups={"dvae": ParamGroupConfig(lr=3e-4, warmup_steps=0)}
    )
    schedule = LearningRateSchedule(optimizer, ["dvae", "main"], decay_kind="exponential", half_life=2)
    rates = schedule.learning_rates(1)
    assert rates["dvae"] == pytest.approx(3e-4 * 0.5**0.5)
    assert rates["main"] == pytest.approx(1e-4 * 0.5 * 0.5**0.5)
    no_decay = LearningRateSchedule(optimizer, ["dvae", "main"])
    assert no_decay.learning_rates(0) == pytest.approx({"dvae": 3e-4, "main": 0.25e-4})
    assert no_decay.learning_rates(10) == pytest.approx({"dvae": 3e-4, "main": 1e-4})


def test_plateau_rule_halves_after_patience_without_improvement() -> None:
    plateau = PlateauState(patience=2, factor=0.5)
    schedule = LearningRateSchedule(OptimizerConfig(lr=1.0), ["main"], decay_kind="plateau", plateau=plateau)
    decisions = [plateau.update(loss) for loss in (1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.5)]
    # 0.95 and 0.91 do not beat 0.9 -> halve; 0.92, 0.93 again -> halve; 0.5 improves.
    assert decisions == [False, False, False, True, False, True, False]
    assert plateau.decay == 0.25
    assert schedule.learning_rates(123) == {"main": 0.25}
    restored = PlateauState(patience=2, factor=0.5)
    restored.load_state_dict(plateau.state_dict())
    assert restored == plateau
