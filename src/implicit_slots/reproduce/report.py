"""The figure (PNG) and the results table (Markdown) of an experiment, from its run folders.

For every curve of the experiment and every seed, the run folder is found through the plan (shared runs and
two-stage SLATE's ``runs_dir/two_stage/`` included) or, without a plan, at ``runs_dir/<config>/seed<s>``.
Each report says how its SLATE runs trained their dVAE (jointly, or from a shared dVAE stage, with that
stage's ``mse_dvae`` against its all-background ``mse_background`` per seed). Learning-curve panels show
mean ± std over seeds; bar panels show the final metrics (mean ± std, one dot per seed). The Markdown table
lists our mean ± std next to the paper's number ("not reported" where the paper gives none).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicit_slots.reproduce.aggregate import (
    TRAIN_MAX_PREFIX,
    TRAIN_PREFIX,
    RunRecord,
    aggregate_curve,
    aggregate_final,
    final_value,
    load_run,
)
from implicit_slots.reproduce.experiments import NOT_REPORTED, Curve, Experiment
from implicit_slots.reproduce.runs import RunSpec, uses_two_stage
from implicit_slots.reproduce.verdicts import Verdict, diverged_text, effect_text, verdict_table

__all__ = [
    "VERDICTS_FILE",
    "CurveRuns",
    "collect_runs",
    "draw_figure",
    "draw_verdicts",
    "results_table",
    "write_reports",
    "write_verdict_summary",
]

VERDICTS_FILE = "verdicts.md"
VERDICT_RULE = (
    "per-seed differences arm - against (ratios arm / against for metrics compared on a log scale), their "
    "mean and Student-t interval (95%; 90% for 'similar', i.e. two one-sided tests at 5%); supported when "
    "the interval lies on the claimed side (inside the margin for 'similar', below the bound for one arm), "
    "contradicted when it lies on the other side (wholly outside the margin), inconclusive otherwise. A "
    "verdict tests the direction; the effect column gives the size to set beside the paper's (about 7x, "
    "about 10x). Seeds that diverged are left out of the statistics and listed"
)
VERDICT_CAVEATS = (
    "Each verdict is about the configs of this scale, not the paper's: at `cpu` the models, images and runs "
    "are far smaller (docs/reproduction.md), so a contradicted claim here is a result about that recipe. "
    "The tests are not corrected for multiple comparisons, and tests on one pair of arms (the AP "
    "thresholds of Fig. 7, for instance) are not independent; the totals count tests, not claims."
)
SMOOTH_POINTS = 5  # moving-average window (logged points) of the plotted learning curves


@dataclass
class CurveRuns:
    """The runs (one per seed that has a run folder) behind one curve, and where they live."""

    curve: Curve
    run_name: str
    runs: list[RunRecord]
    seeds: int

    @property
    def shared(self) -> bool:
        """The runs are those of another config (identical experiment)."""
        return self.run_name != self.curve.config


def collect_runs(
    experiment: Experiment, seeds: int, runs_dir: Path, plan: Sequence[RunSpec] | None = None
) -> list[CurveRuns]:
    """The run records of every curve of ``experiment`` (seeds ``0 .. seeds-1``)."""
    aliases: dict[tuple[str, int], RunSpec] = {}
    for spec in plan or ():
        if spec.kind != "run":
            continue
        for alias in spec.aliases:
            aliases[(alias, spec.seed)] = spec
    collected = []
    for curve in experiment.curves:
        runs = []
        run_name = curve.config
        for seed in range(seeds):
            found = aliases.get((curve.config, seed))
            run_name = found.config_name if found is not None else curve.config
            run_dir = found.run_dir if found is not None else runs_dir / curve.config / f"seed{seed}"
            record = load_run(run_dir, seed)
            if record is not None:
                runs.append(record)
        collected.append(CurveRuns(curve, run_name, runs, seeds))
    return collected


def _metric_label(metric: str) -> str:
    if metric.startswith(TRAIN_MAX_PREFIX):
        return f"{metric[len(TRAIN_MAX_PREFIX) :]} (train, max)"
    if metric.startswith(TRAIN_PREFIX):
        return f"{metric[len(TRAIN_PREFIX) :]} (train, last 10%)"
    return metric


def _notes(item: CurveRuns) -> str:
    notes = []
    finished = [r for r in item.runs if r.finished]
    if len(finished) < item.seeds:
        notes.append(f"{len(finished)}/{item.seeds} seeds finished")
    steps = sorted({r.last_step for r in item.runs})
    if item.runs and any(not r.finished for r in item.runs):
        notes.append("partial: steps " + ", ".join(str(s) for s in steps))
    diverged = [r for r in item.runs if r.diverged]
    if diverged:
        notes.append(
            "diverged (NaN/Inf) in seed(s) " + ", ".join(f"{r.seed} at step {r.last_step}" for r in diverged)
        )
    unevaluated = [r.seed for r in item.runs if r.eval_step is None]
    if unevaluated:
        notes.append("not evaluated: seed(s) " + ", ".join(str(s) for s in unevaluated))
    if item.shared:
        notes.append(f"same run as {item.run_name}")
    return "; ".join(notes)


def results_table(experiment: Experiment, collected: Sequence[CurveRuns]) -> str:
    """The Markdown results table: one row per curve, mean ± std per metric, the paper's numbers, notes."""
    metrics = [m for m in experiment.final_metrics if any(aggregate_final(c.runs, m) for c in collected)]
    header = ["curve", "config", "seeds", *(_metric_label(m) for m in metrics), "paper", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in collected:
        cells = [item.curve.label, f"`{item.curve.config}`", str(len(item.runs))]
        for metric in metrics:
            stat = aggregate_final(item.runs, metric)
            cells.append(stat.format() if stat is not None else "-")
        paper = [
            f"{_metric_label(n.metric)}: {n.value}"
            for n in experiment.paper_numbers
            if n.config == item.curve.config
        ]
        cells.append("; ".join(paper) if paper else NOT_REPORTED)
        cells.append(_notes(item))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_seed_table(experiment: Experiment, collected: Sequence[CurveRuns]) -> str:
    """Every seed's final values (what the mean ± std is made of)."""
    metrics = [m for m in experiment.final_metrics if any(aggregate_final(c.runs, m) for c in collected)]
    header = ["curve", "seed", "last step", *(_metric_label(m) for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in collected:
        for run in item.runs:
            cells = [item.curve.label, str(run.seed), str(run.last_step)]
            for metric in metrics:
                value = final_value(run, metric)
                cells.append(
                    "-" if value is None else ("NaN" if not math.isfinite(value) else f"{value:.4g}")
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_figure(experiment: Experiment, collected: Sequence[CurveRuns], path: Path, scale: str) -> Path:
    """Learning-curve panels (mean ± std over seeds) and bar panels of the final metrics, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [m for m in experiment.bar_metrics if any(aggregate_final(c.runs, m) for c in collected)]
    count = len(experiment.panels) + len(bars)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    axes = list(axes_grid.flat)
    colours = plt.get_cmap("tab10")
    colour_of = {item.curve.config: colours(i % 10) for i, item in enumerate(collected)}
    for axis, panel in zip(axes, experiment.panels):
        drawn = False
        for item in collected:
            if panel.panel and item.curve.panel != panel.panel:
                continue
            curve = aggregate_curve(item.runs, panel.key, smooth=SMOOTH_POINTS)
            if curve is None:
                continue
            finite = np.isfinite(curve.mean)
            if panel.log_scale:
                finite &= curve.mean > 0
            if not finite.any():
                continue
            colour = colour_of[item.curve.config]
            steps, mean, std = curve.steps[finite], curve.mean[finite], curve.std[finite]
            axis.plot(steps, mean, color=colour, label=f"{item.curve.label} (n={len(item.runs)})", lw=1.4)
            low = np.maximum(mean - std, mean * 1e-3) if panel.log_scale else mean - std
            axis.fill_between(steps, low, mean + std, color=colour, alpha=0.2, lw=0)
            drawn = True
        axis.set_title(panel.title, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        if drawn:
            if panel.log_scale:
                axis.set_yscale("log")
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        axis.tick_params(labelsize=7)
    for axis, metric in zip(axes[len(experiment.panels) :], bars):
        labels, means, stds = [], [], []
        for index, item in enumerate(collected):
            stat = aggregate_final(item.runs, metric)
            labels.append(item.curve.label)
            means.append(stat.mean if stat is not None else math.nan)
            stds.append(stat.std if stat is not None else 0.0)
            values = [final_value(r, metric) for r in item.runs]
            points = [v for v in values if v is not None and math.isfinite(v)]
            axis.scatter([index] * len(points), points, color="black", s=8, zorder=3)
        positions = np.arange(len(labels))
        axis.bar(
            positions,
            np.nan_to_num(np.asarray(means), nan=0.0),
            yerr=stds,
            color=[colour_of[c.curve.config] for c in collected],
            alpha=0.8,
            capsize=3,
        )
        axis.set_xticks(positions)
        axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        axis.set_title(_metric_label(metric), fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in axes[count:]:
        axis.axis("off")
    figure.suptitle(
        f"{experiment.name} ({experiment.source}), scale {scale}: {experiment.title}", fontsize=10
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def dvae_training_section(
    experiment: Experiment, scale: str, plan: Sequence[RunSpec], dvae: str
) -> list[str]:
    """Markdown lines: how the experiment's SLATE runs trained their dVAE (and each dVAE stage's result)."""
    arms = _slate_arms(experiment, plan)
    if not arms:
        return []
    stage = uses_two_stage(experiment, scale, dvae)
    if stage is None:
        return ["SLATE training: **joint** (official SLATE: the dVAE trains with the rest of each run).", ""]
    stage_dirs = sorted({spec.dvae_stage for spec in arms if spec.dvae_stage is not None})
    lines = [
        "SLATE training: **two-stage**: every arm of a seed starts from the same pre-trained dVAE "
        f"(`model.dvae_init`, {'frozen' if stage.freeze else 'fine-tuned'}), trained once per "
        "(dataset, resolution, seed):",
        "",
        "| dVAE stage | seed | steps | mse_dvae | mse_background (all-background image) |",
        "|---|---|---|---|---|",
    ]
    for stage_dir in stage_dirs:
        record = load_run(stage_dir, 0)
        values = record.eval_metrics if record is not None else {}
        cells = [
            f"`{stage_dir.parent.name}`",
            stage_dir.name.removeprefix("seed"),
            str(record.last_step) if record is not None else "-",
            *(
                f"{values[key]:.4g}" if values.get(key) is not None else "-"
                for key in ("mse_dvae", "mse_background")
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _slate_arms(experiment: Experiment, plan: Sequence[RunSpec]) -> list[RunSpec]:
    curves = {curve.config for curve in experiment.curves}
    return [
        spec
        for spec in plan
        if spec.kind == "run" and curves & set(spec.aliases) and spec.config.model.name == "slate"
    ]


def report_name(experiment: Experiment, scale: str, dvae: str, plan: Sequence[RunSpec]) -> str:
    """``<name>``, or ``<name>_joint`` / ``<name>_two_stage`` where ``--dvae`` overrides the experiment's
    choice for its SLATE runs (so that both kinds of report can sit side by side)."""
    if not _slate_arms(experiment, plan):
        return experiment.name
    default = uses_two_stage(experiment, scale, "auto") is not None
    chosen = uses_two_stage(experiment, scale, dvae) is not None
    if chosen == default:
        return experiment.name
    return f"{experiment.name}_{'two_stage' if chosen else 'joint'}"


def write_reports(
    experiments: Sequence[Experiment],
    scale: str,
    seeds: int,
    runs_dir: Path,
    out_dir: Path,
    *,
    plan: Sequence[RunSpec] | None = None,
    command: str = "",
    dvae: str = "auto",
) -> list[Path]:
    """Write ``out_dir/<name>.png`` and ``out_dir/<name>.md`` for every experiment; returns the paths.

    ``dvae`` is ``reproduce --dvae``: where it overrides an experiment's choice, the files are named
    ``<name>_joint`` / ``<name>_two_stage`` (:func:`report_name`).
    """
    written = []
    summary: list[tuple[Experiment, str, list[Verdict]]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for experiment in experiments:
        collected = collect_runs(experiment, seeds, runs_dir, plan)
        name = report_name(experiment, scale, dvae, plan or ())
        figure = draw_figure(experiment, collected, out_dir / f"{name}.png", scale)
        verdicts, verdicts_markdown = verdict_table(
            experiment, {c.curve.config: c.runs for c in collected}, scale
        )
        summary.append((experiment, name, verdicts))
        text = [
            f"# {experiment.name}: {experiment.title}",
            "",
            f"Paper: {experiment.source}. Scale: `{scale}`. Seeds requested: {seeds}.",
            "",
            "Paper's claims tested here:",
            "",
            *(f"- {claim}" for claim in experiment.claims),
            "",
            *dvae_training_section(experiment, scale, plan or (), dvae),
            f"![{experiment.name}]({figure.name})",
            "",
            *(["Verdicts (" + VERDICT_RULE + "):", "", verdicts_markdown] if verdicts else []),
            "Mean ± sample std over seeds. `(train, last 10%)` columns are the mean over the last 10% of "
            "logged training steps of each run, `(train, max)` the largest value logged during training; "
            "the others come from `eval/metrics.json`. "
            "`proxy_feature_distance` is not FID (no Inception weights offline).",
            "",
            results_table(experiment, collected),
            "Per seed:",
            "",
            per_seed_table(experiment, collected),
        ]
        if command:
            text += ["Command:", "", "```", command, "```", ""]
        markdown = out_dir / f"{name}.md"
        markdown.write_text("\n".join(text))
        written += [figure, markdown]
    if any(verdicts for _, _, verdicts in summary):
        # ``--dvae joint`` / ``two-stage`` reports sit beside the default ones (as report_name's files).
        verdicts_name = VERDICTS_FILE if dvae == "auto" else f"verdicts_{dvae.replace('-', '_')}.md"
        summary_path = write_verdict_summary(summary, scale, seeds, out_dir / verdicts_name, command)
        written += [summary_path.with_suffix(".png"), summary_path]
    return written


def write_verdict_summary(
    summary: Sequence[tuple[Experiment, str, Sequence[Verdict]]],
    scale: str,
    seeds: int,
    path: Path,
    command: str = "",
) -> Path:
    """One table of every claim test of the experiments of this call (``verdicts.md``), and beside it a
    figure of every effect with its interval (``verdicts.png``, :func:`draw_verdicts`)."""
    figure = draw_verdicts(summary, path.with_suffix(".png"), scale)
    counts: dict[str, int] = {}
    for _, _, verdicts in summary:
        for verdict in verdicts:
            counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
    lines = [
        f"# Verdicts on the paper's claims, scale `{scale}`, {seeds} seed(s) requested",
        "",
        f"Rule: {VERDICT_RULE}.",
        "",
        "Totals: " + ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items())) + ".",
        "",
        VERDICT_CAVEATS,
        "",
        f"![verdicts]({figure.name})",
        "",
        "| experiment | claim | metric | effect | CI | seeds | verdict | diverged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for experiment, name, verdicts in summary:
        for verdict in verdicts:
            effect, interval = effect_text(verdict)
            lines.append(
                f"| [{experiment.name}]({name}.md) | {verdict.test.claim} | `{verdict.metric}` | {effect} | "
                f"{interval} | {len(verdict.seeds)} | **{verdict.verdict}** | {diverged_text(verdict)} |"
            )
    if command:
        lines += ["", "Command:", "", "```", command, "```"]
    path.write_text("\n".join(lines) + "\n")
    return path


_VERDICT_COLOURS = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}


def draw_verdicts(
    summary: Sequence[tuple[Experiment, str, Sequence[Verdict]]], path: Path, scale: str
) -> Path:
    """A forest plot of the claim tests that have an effect: one row per test, the mean effect and its
    interval, coloured by verdict, against the line of no difference (the margin shaded for "similar",
    the bound marked for one-arm tests). Left panel: ratios (tests on a log scale, log axis); right
    panel: differences and one-arm means."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (experiment.name, verdict)
        for experiment, _, verdicts in summary
        for verdict in verdicts
        if verdict.effect is not None
    ]
    panels = [[r for r in rows if r[1].test.log], [r for r in rows if not r[1].test.log]]
    heights = [max(len(p), 1) for p in panels]
    figure, axes = plt.subplots(
        2, 1, figsize=(11, 1.6 + 0.3 * sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    for axis, panel, log in zip(axes[:, 0], panels, (True, False)):

        def value(x: float, log: bool = log) -> float:
            return 10**x if log else x

        for row, (_, verdict) in enumerate(panel):
            test, y = verdict.test, len(panel) - 1 - row
            colour = _VERDICT_COLOURS.get(verdict.verdict, "black")
            if test.kind == "similar":
                axis.fill_betweenx(
                    [y - 0.4, y + 0.4], value(-test.margin), value(test.margin), color=colour, alpha=0.2, lw=0
                )
            if test.kind == "below":
                axis.plot([value(test.margin)] * 2, [y - 0.4, y + 0.4], color="black", lw=1.2)
            if verdict.interval is not None:
                low, high = (value(v) for v in verdict.interval)
                axis.plot([low, high], [y, y], color=colour, lw=2)
            axis.plot(value(verdict.effect or 0.0), y, "o", color=colour, ms=5)
        axis.set_yticks(range(len(panel)))
        labels = [textwrap.shorten(f"{name}: {v.test.claim}", 95) for name, v in reversed(panel)]
        axis.set_yticklabels(labels, fontsize=7)
        axis.set_ylim(-0.6, max(len(panel), 1) - 0.4)
        if log:
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.3g}"))
            low, high = axis.get_xlim()
            # Within about a decade the major ticks (powers of 10) are too few: label the minor ones.
            minor = matplotlib.ticker.StrMethodFormatter("{x:.2g}") if high / low < 20 else None
            axis.xaxis.set_minor_formatter(minor or matplotlib.ticker.NullFormatter())
            axis.axvline(1.0, color="black", lw=0.8, ls="--")
            axis.set_title("ratio arm / against (log axis): mean and interval; shaded: margin", fontsize=9)
        else:
            axis.axvline(0.0, color="black", lw=0.8, ls="--")
            axis.set_title("difference arm - against, or one arm's mean (bar: its bound)", fontsize=9)
        axis.tick_params(axis="x", which="both", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
        if not panel:
            axis.text(0.5, 0.5, "no test", ha="center", va="center", transform=axis.transAxes)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2, label=k) for k, c in _VERDICT_COLOURS.items()]
    figure.legend(handles=handles, loc="upper right", fontsize=7, ncol=3)
    figure.suptitle(f"Verdicts on the paper's claims, scale {scale}", fontsize=10, x=0.02, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
