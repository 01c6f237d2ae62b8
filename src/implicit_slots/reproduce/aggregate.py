"""Statistics over seeds from run folders: learning curves (``metrics.jsonl``) and final metrics.

A *final* training metric ``train:KEY`` of one run is the mean of KEY over the last
``FINAL_FRACTION`` of its logged steps (one noisy batch is not a result); an evaluation metric is the
value in ``eval/metrics.json``. Over seeds, :class:`Statistic` holds mean, sample standard deviation and
the number of seeds that had the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from implicit_slots.training.logger import read_metrics

__all__ = [
    "FINAL_FRACTION",
    "TRAIN_MAX_PREFIX",
    "TRAIN_PREFIX",
    "CurveStatistics",
    "RunRecord",
    "Statistic",
    "aggregate_curve",
    "aggregate_final",
    "final_value",
    "load_run",
    "series",
]

FINAL_FRACTION = 0.1
TRAIN_PREFIX = "train:"
TRAIN_MAX_PREFIX = "train_max:"


@dataclass
class RunRecord:
    """What a finished (or partial) run folder holds.

    Attributes:
        run_dir: the folder.
        seed: its ``training.seed``.
        records: the ``metrics.jsonl`` records.
        eval_metrics: ``eval/metrics.json``'s metrics (empty when not evaluated).
        eval_step: the checkpoint step that was evaluated (None: not evaluated).
        last_step: the last logged step (0 when nothing was logged).
        max_steps: ``training.max_steps`` of its config.yaml (None when unreadable).
        diverged: training stopped on NaN/Inf steps.
    """

    run_dir: Path
    seed: int
    records: list[dict[str, Any]]
    eval_metrics: dict[str, float | None] = field(default_factory=dict)
    eval_step: int | None = None
    last_step: int = 0
    max_steps: int | None = None
    diverged: bool = False

    @property
    def finished(self) -> bool:
        """Trained to ``max_steps`` (or stopped by divergence)."""
        return self.diverged or (self.max_steps is not None and self.last_step >= self.max_steps)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def load_run(run_dir: Path, seed: int) -> RunRecord | None:
    """Read a run folder; None when it has no ``metrics.jsonl``."""
    import yaml

    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        return None
    records = read_metrics(metrics_path)
    evaluation = _read_json(run_dir / "eval" / "metrics.json")
    status = _read_json(run_dir / "reproduce_status.json")
    max_steps: int | None = None
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        max_steps = int(config["training"]["max_steps"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        pass
    return RunRecord(
        run_dir=run_dir,
        seed=seed,
        records=records,
        eval_metrics=dict(evaluation.get("metrics", {})),
        eval_step=evaluation.get("checkpoint_step"),
        last_step=max((int(r.get("step", 0)) for r in records), default=0),
        max_steps=max_steps,
        diverged=status.get("train") == "diverged",
    )


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` in metrics.jsonl records; null (non-finite) values are NaN."""
    steps, values = [], []
    for record in records:
        if key in record and "step" in record:
            steps.append(int(record["step"]))
            value = record[key]
            values.append(float(value) if value is not None else math.nan)
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def final_value(run: RunRecord, metric: str) -> float | None:
    """A run's final value of ``metric``.

    ``train:KEY``: mean of KEY over the last 10% of logged steps; ``train_max:KEY``: the largest finite
    value of KEY over the whole run (how far a norm grew); anything else: ``eval/metrics.json``.
    """
    if metric.startswith(TRAIN_MAX_PREFIX):
        _, values = series(run.records, metric[len(TRAIN_MAX_PREFIX) :])
        finite = values[np.isfinite(values)]
        return float(finite.max()) if len(finite) else None
    if not metric.startswith(TRAIN_PREFIX):
        value = run.eval_metrics.get(metric)
        return float(value) if value is not None else None
    steps, values = series(run.records, metric[len(TRAIN_PREFIX) :])
    if len(steps) == 0:
        return None
    first = steps.max() - FINAL_FRACTION * max(int(steps.max()), 1)
    tail = values[steps >= first]
    if len(tail) == 0 or not np.isfinite(tail).any():
        return math.nan if len(tail) else None
    return float(np.nanmean(tail))


@dataclass
class Statistic:
    """Mean, sample standard deviation (0 for one seed) and number of seeds of a value."""

    mean: float
    std: float
    count: int

    def format(self, digits: int = 4) -> str:
        """``"12.3 ± 0.4"`` (``"12.3"`` for one seed, ``"NaN"`` when non-finite)."""
        if not math.isfinite(self.mean):
            return "NaN"
        text = f"{self.mean:.{digits}g}"
        return text if self.count < 2 else f"{text} ± {self.std:.2g}"


def _statistic(values: Sequence[float]) -> Statistic | None:
    if len(values) == 0:
        return None
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Statistic(float(array.mean()), std, len(array))


def aggregate_final(runs: Sequence[RunRecord], metric: str) -> Statistic | None:
    """Mean ± std over the runs (seeds) that have ``metric``; None when none has it."""
    values = [v for v in (final_value(run, metric) for run in runs) if v is not None]
    return _statistic(values)


@dataclass
class CurveStatistics:
    """A learning curve over seeds: at each step, mean and std over the seeds that logged it."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average ignoring NaN (the first points average what exists)."""
    if window <= 1 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    sums = np.cumsum(filled)
    counts = np.cumsum(finite.astype(np.float64))
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def aggregate_curve(runs: Sequence[RunRecord], key: str, smooth: int = 1) -> CurveStatistics | None:
    """Mean ± std over seeds of a metrics.jsonl key at every logged step (smoothed per seed first).

    Args:
        runs: the seeds' runs.
        key: metrics.jsonl key.
        smooth: trailing moving-average window in logged points (1: none).

    Returns:
        The curve, or None when no run logged ``key``.
    """
    per_run: list[dict[int, float]] = []
    for run in runs:
        steps, values = series(run.records, key)
        if len(steps):
            per_run.append(dict(zip(steps.tolist(), _smooth(values, smooth).tolist())))
    if not per_run:
        return None
    all_steps = sorted(set().union(*per_run))
    mean, std, count = [], [], []
    for step in all_steps:
        at_step = [r[step] for r in per_run if step in r and math.isfinite(r[step])]
        stat = _statistic(at_step)
        mean.append(stat.mean if stat else math.nan)
        std.append(stat.std if stat else math.nan)
        count.append(stat.count if stat else 0)
    return CurveStatistics(
        np.asarray(all_steps), np.asarray(mean), np.asarray(std), np.asarray(count, dtype=np.int64)
    )
