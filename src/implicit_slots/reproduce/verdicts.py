"""Verdicts on the paper's claims: each :class:`ClaimTest` of an experiment decided from its runs.

For a test of two arms, the final values are paired by seed (seeds where both runs finished and have a
finite value) and the per-seed differences ``arm - against`` (of ``log10`` values with ``log``) give a mean
and a 95% Student-t interval (``n - 1`` degrees of freedom). A one-arm ``below`` test uses the arm's values
themselves; ``similar`` tests use the 90% interval (two one-sided tests at 5%). The verdict follows
:class:`~implicit_slots.reproduce.experiments.ClaimTest`: supported, contradicted, inconclusive (the
interval does not decide, or fewer than two seeds), not run, or no usable seeds. Runs that diverged are
left out of the statistics and listed beside the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from implicit_slots.reproduce.aggregate import RunRecord, final_value
from implicit_slots.reproduce.experiments import ClaimTest, Experiment

__all__ = [
    "CONFIDENCE",
    "CONTRADICTED",
    "EQUIVALENCE_CONFIDENCE",
    "INCONCLUSIVE",
    "NOT_RUN",
    "NOT_TESTABLE",
    "NO_USABLE_SEEDS",
    "SUPPORTED",
    "Verdict",
    "decide",
    "diverged_text",
    "effect_text",
    "judge",
    "t_interval",
    "verdict_table",
]

CONFIDENCE = 0.95
# "similar" is two one-sided tests at 5% each (TOST): the difference lies inside the margin when the 90%
# interval does.
EQUIVALENCE_CONFIDENCE = 0.90
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_RUN, NO_USABLE_SEEDS = "not run", "no usable seeds"
NOT_TESTABLE = "not testable at this scale"


@dataclass
class Verdict:
    """The outcome of one claim test.

    Attributes:
        test: the test.
        verdict: ``supported``, ``contradicted``, ``inconclusive``, ``not run`` (no run folder of an arm)
            or ``no usable seeds`` (runs exist, none finished, evaluated and finite in both arms).
        metric: the metric used (``test.metric``, or ``test.fallback_metric`` when no run has the first).
        seeds: the seeds used (paired seeds for two arms).
        arm_values: the arm's final values on those seeds (raw, not log).
        against_values: the other arm's (empty for ``below``).
        effect: mean of the per-seed differences ``arm - against`` (``below``: the mean of the arm's
            values), of log10 values with ``test.log``; None when no seed was usable.
        interval: its t interval (95%; 90% for ``similar``); None with fewer than two seeds.
        diverged: seeds that stopped on NaN/Inf steps, per config; they are left out of the statistics
            (their final values would come from a shorter run) and listed here instead.
        note: why seeds were left out, or why the test is undecided.
    """

    test: ClaimTest
    verdict: str
    metric: str
    seeds: list[int]
    arm_values: list[float]
    against_values: list[float]
    effect: float | None
    interval: tuple[float, float] | None
    diverged: dict[str, list[int]]
    note: str = ""


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Student-t interval of the mean of ``values`` (at least two).

    Raises:
        ValueError: fewer than two values.
    """
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        raise ValueError(f"a t interval needs at least two values, got {len(array)}")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(array) - 1)) * float(array.std(ddof=1))
    half /= math.sqrt(len(array))
    mean = float(array.mean())
    return mean - half, mean + half


def decide(test: ClaimTest, interval: tuple[float, float]) -> str:
    """The verdict of ``test`` given the interval of its effect (see :class:`ClaimTest`)."""
    low, high = interval
    if test.kind == "lower":
        return SUPPORTED if high < 0 else CONTRADICTED if low > 0 else INCONCLUSIVE
    if test.kind == "higher":
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    bound = test.margin
    if test.kind == "below":
        return SUPPORTED if high < bound else CONTRADICTED if low > bound else INCONCLUSIVE
    if -bound < low and high < bound:
        return SUPPORTED
    return CONTRADICTED if low > bound or high < -bound else INCONCLUSIVE


def _values(runs: Sequence[RunRecord], metric: str) -> tuple[dict[int, float], list[int], list[str]]:
    """Usable final values by seed, the diverged seeds, and why other seeds were left out."""
    values, diverged, left_out = {}, [], []
    for run in runs:
        if run.diverged:
            diverged.append(run.seed)
            left_out.append(f"seed {run.seed} diverged at step {run.last_step}")
            continue
        if not run.finished:
            left_out.append(f"seed {run.seed} not finished (step {run.last_step})")
            continue
        value = final_value(run, metric)
        if value is None:
            evaluated = metric.startswith(("train:", "train_max:")) or run.eval_step is not None
            left_out.append(f"seed {run.seed} " + ("has no value" if evaluated else "not evaluated"))
            continue
        if not math.isfinite(value):
            left_out.append(f"seed {run.seed} has a non-finite value")
            continue
        values[run.seed] = value
    return values, diverged, left_out


def _metric(test: ClaimTest, runs_of: dict[str, Sequence[RunRecord]]) -> str:
    """``test.metric``, or its fallback when no run of the test's arms has the first."""
    if test.fallback_metric is None:
        return test.metric
    configs = [test.arm] if test.against is None else [test.arm, test.against]
    runs = [run for config in configs for run in runs_of.get(config, ())]
    return (
        test.metric
        if any(final_value(run, test.metric) is not None for run in runs)
        else test.fallback_metric
    )


def judge(test: ClaimTest, runs_of: dict[str, Sequence[RunRecord]], scale: str | None = None) -> Verdict:
    """Decide ``test`` from the runs of each config (``runs_of[config]``: its seeds' run records) at
    ``scale`` (None: any scale the test allows)."""
    if scale is not None and scale not in test.scales:
        note = f"only the {' / '.join(test.scales)} scale's data can test this claim"
        return Verdict(test, NOT_TESTABLE, test.metric, [], [], [], None, None, {}, note)
    metric = _metric(test, runs_of)
    configs = [test.arm] if test.against is None else [test.arm, test.against]
    values, diverged, notes = {}, {}, []
    for config in configs:
        values[config], diverged[config], left_out = _values(runs_of.get(config, ()), metric)
        notes += [f"{config}: {note}" for note in left_out]
    seeds = sorted(set.intersection(*(set(values[config]) for config in configs)))
    unpaired = sorted(set.union(*(set(values[config]) for config in configs)) - set(seeds))
    if unpaired and all(values[config] for config in configs):  # else the notes above say why
        notes.append("unpaired seed(s) left out: " + ", ".join(str(seed) for seed in unpaired))
    diverged = {config: seeds_ for config, seeds_ in diverged.items() if seeds_}
    arm_values = [values[test.arm][s] for s in seeds]
    against_values = [values[test.against][s] for s in seeds] if test.against is not None else []

    def verdict(
        kind: str, effect: float | None = None, interval: tuple[float, float] | None = None
    ) -> Verdict:
        return Verdict(
            test,
            kind,
            metric,
            seeds,
            arm_values,
            against_values,
            effect,
            interval,
            diverged,
            "; ".join(notes),
        )

    if not seeds:
        ran = all(runs_of.get(config) for config in configs)
        return verdict(NO_USABLE_SEEDS if ran else NOT_RUN)

    def transform(value: float) -> float:
        if not test.log:
            return value
        return math.log10(value) if value > 0 else -math.inf

    if test.against is None:
        differences = [transform(a) for a in arm_values]
    else:
        differences = [transform(a) - transform(b) for a, b in zip(arm_values, against_values)]
    if not all(math.isfinite(d) for d in differences):
        notes.append("a non-positive value cannot be compared on a log scale")
        return verdict(INCONCLUSIVE)
    effect = float(np.mean(differences))
    if len(seeds) < 2:
        notes.append("fewer than two seeds: no interval")
        return verdict(INCONCLUSIVE, effect)
    confidence = EQUIVALENCE_CONFIDENCE if test.kind == "similar" else CONFIDENCE
    interval = t_interval(differences, confidence)
    return verdict(decide(test, interval), effect, interval)


def _number(value: float) -> str:
    return f"{value:.4g}"


def effect_text(verdict: Verdict) -> tuple[str, str]:
    """(effect, interval) as printed: ratios (×) for log tests, differences otherwise."""
    test, effect, interval = verdict.test, verdict.effect, verdict.interval
    if effect is None:
        return "-", "-"
    if test.log:
        text = f"×{10**effect:.3g}" if test.against is not None else _number(10**effect)
        bounds = "-" if interval is None else f"[{10 ** interval[0]:.3g}, {10 ** interval[1]:.3g}]"
        return text, bounds
    sign = "+" if test.against is not None else ""
    bounds = "-" if interval is None else f"[{interval[0]:{sign}.3g}, {interval[1]:{sign}.3g}]"
    return (f"{effect:+.3g}" if test.against is not None else _number(effect)), bounds


def diverged_text(verdict: Verdict) -> str:
    """``"config: seeds"`` of the seeds that diverged, or ``-``."""
    if not verdict.diverged:
        return "-"
    return "; ".join(f"{config}: {', '.join(map(str, seeds))}" for config, seeds in verdict.diverged.items())


def _test_text(test: ClaimTest) -> str:
    if test.against is None:
        return f"mean of `{test.arm}` < {10**test.margin if test.log else test.margin:g}"
    relation = {"lower": "<", "higher": ">", "similar": "≈"}[test.kind]
    margin = ""
    if test.kind == "similar":
        margin = f" (±×{10**test.margin:.3g})" if test.log else f" (±{test.margin:g})"
    return f"`{test.arm}` {relation} `{test.against}`{margin}"


def verdict_table(
    experiment: Experiment, runs_of: dict[str, Sequence[RunRecord]], scale: str | None = None
) -> tuple[list[Verdict], str]:
    """Judge every claim test of ``experiment`` at ``scale``; returns the verdicts and their Markdown
    table."""
    verdicts = [judge(test, runs_of, scale) for test in experiment.claim_tests]
    header = [
        "claim",
        "test",
        "metric",
        "seeds",
        "per seed: arm",
        "per seed: against",
        "effect",
        "CI",
        "verdict",
        "diverged",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for verdict in verdicts:
        effect, interval = effect_text(verdict)
        cells = [
            verdict.test.claim,
            _test_text(verdict.test),
            f"`{verdict.metric}`",
            ", ".join(str(s) for s in verdict.seeds) or "-",
            ", ".join(_number(v) for v in verdict.arm_values) or "-",
            ", ".join(_number(v) for v in verdict.against_values) or "-",
            effect,
            interval,
            f"**{verdict.verdict}**",
            diverged_text(verdict),
            verdict.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return verdicts, "\n".join(lines) + "\n"
