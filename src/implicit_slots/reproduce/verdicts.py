"""Verdicts on the paper's claims: each :class:`ClaimTest` of an experiment decided from its runs.

For a test of two arms, the final values are paired by seed (seeds where both runs finished and have a
finite value) and the per-seed differences ``arm - against`` (of ``log10`` values with ``log``) give a mean
and a 95% Student-t interval (``n - 1`` degrees of freedom). A one-arm ``below`` test uses the arm's values
themselves. The verdict follows :class:`~implicit_slots.reproduce.experiments.ClaimTest`: supported,
contradicted, inconclusive (the interval does not decide, or fewer than two seeds), or not run.
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
    "INCONCLUSIVE",
    "NOT_RUN",
    "SUPPORTED",
    "Verdict",
    "decide",
    "effect_text",
    "judge",
    "t_interval",
    "verdict_table",
]

CONFIDENCE = 0.95
SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"


@dataclass
class Verdict:
    """The outcome of one claim test.

    Attributes:
        test: the test.
        verdict: ``supported``, ``contradicted``, ``inconclusive`` or ``not run``.
        seeds: the seeds used (paired seeds for two arms).
        arm_values: the arm's final values on those seeds (raw, not log).
        against_values: the other arm's (empty for ``below``).
        effect: mean of the per-seed differences ``arm - against`` (``below``: the arm's mean), in log10
            units with ``test.log``; None when no seed was usable.
        interval: its 95% t interval; None with fewer than two seeds.
        note: why seeds were left out, or why the test is undecided.
    """

    test: ClaimTest
    verdict: str
    seeds: list[int]
    arm_values: list[float]
    against_values: list[float]
    effect: float | None
    interval: tuple[float, float] | None
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


def _values(runs: Sequence[RunRecord], metric: str) -> tuple[dict[int, float], list[str]]:
    values, left_out = {}, []
    for run in runs:
        if not run.finished:
            left_out.append(f"seed {run.seed} not finished")
            continue
        value = final_value(run, metric)
        if value is None or not math.isfinite(value):
            left_out.append(f"seed {run.seed} has no finite value" + (" (diverged)" if run.diverged else ""))
            continue
        values[run.seed] = value
    return values, left_out


def judge(test: ClaimTest, runs_of: dict[str, Sequence[RunRecord]]) -> Verdict:
    """Decide ``test`` from the runs of each config (``runs_of[config]``: its seeds' run records)."""
    arm, notes = _values(runs_of.get(test.arm, ()), test.metric)
    against: dict[int, float] = {}
    if test.against is not None:
        against, other_notes = _values(runs_of.get(test.against, ()), test.metric)
        notes += [f"{test.against}: {n}" for n in other_notes]
        seeds = sorted(set(arm) & set(against))
    else:
        seeds = sorted(arm)
    arm_values = [arm[s] for s in seeds]
    against_values = [against[s] for s in seeds] if test.against is not None else []
    if not seeds:
        return Verdict(test, NOT_RUN, [], [], [], None, None, "; ".join(notes))

    def scale(value: float) -> float:
        if not test.log:
            return value
        return math.log10(value) if value > 0 else -math.inf

    if test.against is None:
        differences = [scale(a) for a in arm_values]
    else:
        differences = [scale(a) - scale(b) for a, b in zip(arm_values, against_values)]
    if not all(math.isfinite(d) for d in differences):
        notes.append("a non-positive value cannot be compared on a log scale")
        return Verdict(test, INCONCLUSIVE, seeds, arm_values, against_values, None, None, "; ".join(notes))
    effect = float(np.mean(differences))
    if len(seeds) < 2:
        notes.append("fewer than two seeds: no interval")
        return Verdict(test, INCONCLUSIVE, seeds, arm_values, against_values, effect, None, "; ".join(notes))
    interval = t_interval(differences)
    return Verdict(
        test, decide(test, interval), seeds, arm_values, against_values, effect, interval, "; ".join(notes)
    )


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


def _test_text(test: ClaimTest) -> str:
    if test.against is None:
        return f"`{test.arm}` < {10**test.margin if test.log else test.margin:g}"
    relation = {"lower": "<", "higher": ">", "similar": "≈"}[test.kind]
    margin = ""
    if test.kind == "similar":
        margin = f" (±×{10**test.margin:.3g})" if test.log else f" (±{test.margin:g})"
    return f"`{test.arm}` {relation} `{test.against}`{margin}"


def verdict_table(
    experiment: Experiment, runs_of: dict[str, Sequence[RunRecord]]
) -> tuple[list[Verdict], str]:
    """Judge every claim test of ``experiment``; returns the verdicts and their Markdown table."""
    verdicts = [judge(test, runs_of) for test in experiment.claim_tests]
    header = [
        "claim",
        "test",
        "metric",
        "seeds",
        "per seed: arm",
        "per seed: against",
        "effect",
        "95% CI",
        "verdict",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for verdict in verdicts:
        effect, interval = effect_text(verdict)
        cells = [
            verdict.test.claim,
            _test_text(verdict.test),
            f"`{verdict.test.metric}`",
            ", ".join(str(s) for s in verdict.seeds) or "-",
            ", ".join(_number(v) for v in verdict.arm_values) or "-",
            ", ".join(_number(v) for v in verdict.against_values) or "-",
            effect,
            interval,
            f"**{verdict.verdict}**",
            verdict.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return verdicts, "\n".join(lines) + "\n"
