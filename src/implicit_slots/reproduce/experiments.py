"""The paper's tables and figures as experiments: which configs, which curves, which numbers.

An :class:`Experiment` names the config files under ``configs/paper/<scale>/`` that make up one table or
figure (one file per table cell or figure curve), how each run is evaluated, what to plot and which of the
paper's numbers sit beside ours. ``EXPERIMENTS`` holds the seven of the paper, in the order of ``--list``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from implicit_slots.config import CONFIGS_DIR

SCALES: tuple[str, ...] = ("cpu", "paper")
# Package data (``implicit_slots/configs/paper``), so ``reproduce`` finds its configs when installed.
CONFIG_ROOT = CONFIGS_DIR / "paper"
NOT_REPORTED = "not reported"


@dataclass(frozen=True)
class Curve:
    """One table cell or figure curve: a config file (its stem) and how the figure labels it.

    Attributes:
        config: config name, the stem of ``configs/paper/<scale>/<config>.yaml``.
        label: legend / row label.
        panel: which panel of the figure the curve belongs to (figures with several panels, e.g. Fig. 6).
    """

    config: str
    label: str
    panel: str = ""


@dataclass(frozen=True)
class EvaluationPlan:
    """How ``implicit-slots evaluate`` is called for the runs of an experiment at one scale.

    Attributes:
        split: dataset split to evaluate.
        max_images: at most this many images (None: the whole split).
    """

    split: str = "test"
    max_images: int | None = None


@dataclass(frozen=True)
class CurvePanel:
    """One learning-curve panel of a figure: a ``metrics.jsonl`` key against the training step.

    Attributes:
        key: the metrics.jsonl key (``cross_entropy``, ``diag/residual_mean``, ``grad_norm/total``, ...).
        title: panel title.
        log_scale: plot the y axis on a log scale.
        panel: only curves with this ``Curve.panel`` ("" = every curve).
    """

    key: str
    title: str
    log_scale: bool = False
    panel: str = ""


@dataclass(frozen=True)
class PaperNumber:
    """A number (or statement) the paper gives for a curve and metric.

    Attributes:
        config: the curve's config name.
        metric: our metric name it corresponds to.
        value: the paper's value as text (a number, or a statement such as "about 130 (§5.2 text)").
    """

    config: str
    metric: str
    value: str


CLAIM_TEST_KINDS = ("lower", "higher", "similar", "below")


@dataclass(frozen=True)
class ClaimTest:
    """A pre-registered test of one claim of the paper on the final metric of two arms (or one).

    The values of ``arm`` and ``against`` are paired by seed (at the CPU scale the two arms of a seed read
    the same shared dVAE); the report gives the mean of the per-seed differences ``arm - against`` with a
    95% Student-t interval and a verdict (:mod:`implicit_slots.reproduce.verdicts`):

    - ``lower`` / ``higher``: the claim is that ``arm`` has the lower / higher value. **Supported** when the
      interval lies on the claimed side of 0, **contradicted** when it lies on the other side,
      **inconclusive** otherwise.
    - ``similar``: the claim is that the arms do not differ by more than ``margin``. Supported when the
      90% interval lies inside ``(-margin, margin)`` (two one-sided tests at 5%), contradicted when it lies
      wholly outside.
    - ``below``: one arm (no ``against``); the claim is that its value is below ``margin``. Supported when
      the interval of its mean lies below, contradicted when it lies above.

    With ``log`` the values are compared as ``log10`` (ratios: the right scale for norms, losses and MSEs
    that span orders of magnitude); ``margin`` is then in ``log10`` units too.

    Attributes:
        claim: the claim in words, as the report prints it.
        metric: a final metric (``train:KEY``, ``train_max:KEY`` or an ``eval/metrics.json`` key).
        kind: one of :data:`CLAIM_TEST_KINDS`.
        arm: the config the claim is about.
        against: the config it is compared with (None for ``below``).
        log: compare ``log10`` values.
        margin: the equivalence margin (``similar``) or the bound (``below``).
        fallback_metric: the metric used when no run of the arms has ``metric`` (FID without Inception
            weights: the proxy feature distance); the report names the one used.
        scales: the scales whose configs can test the claim; elsewhere the verdict is "not testable at
            this scale" (the CPU stand-ins of ShapeStacks and COCO are procedural scenes that say nothing
            about those datasets).
    """

    claim: str
    metric: str
    kind: str
    arm: str
    against: str | None = None
    log: bool = False
    margin: float = 0.0
    fallback_metric: str | None = None
    scales: tuple[str, ...] = SCALES

    def __post_init__(self) -> None:
        if self.kind not in CLAIM_TEST_KINDS:
            raise ValueError(f"unknown claim test kind {self.kind!r}; valid: {list(CLAIM_TEST_KINDS)}")
        if (self.against is None) != (self.kind == "below"):
            raise ValueError(f"claim test {self.claim!r}: 'below' takes no 'against', the others need one")
        if self.kind == "similar" and self.margin <= 0:
            raise ValueError(f"claim test {self.claim!r}: 'similar' needs a positive margin")


@dataclass(frozen=True)
class DvaeStage:
    """Two-stage SLATE: a dVAE trained first, once per (dataset, resolution, seed), shared by every arm.

    Every SLATE arm of that seed then starts from the stage's run (``model.dvae_init``) and, with
    ``freeze``, keeps the dVAE fixed (``model.freeze_dvae``), so the arms of a comparison read the same
    tokens. Without a stage the dVAE is trained jointly with the rest, as in official SLATE.

    Attributes:
        max_steps: training steps of the dVAE stage (None: the arms' ``training.max_steps``, the steps the
            dVAE would get in joint training).
        freeze: freeze the dVAE in the arms (False: the arms fine-tune it from the stage's weights).
    """

    max_steps: int | None = None
    freeze: bool = True


@dataclass(frozen=True)
class Experiment:
    """One table or figure of the paper.

    Attributes:
        name: the command-line name (``fig3b``).
        title: what it shows.
        source: where in the paper.
        curves: its table cells / figure curves.
        panels: learning-curve panels to draw.
        final_metrics: metrics of the results table, in order; ``train:KEY`` means the mean of the last
            logged values of a metrics.jsonl key, anything else is a key of ``eval/metrics.json``.
        bar_metrics: final metrics drawn as bars (a subset of ``final_metrics``).
        paper_numbers: the paper's numbers beside ours.
        evaluation: evaluation settings per scale.
        claims: the paper's claims this experiment tests (one line each), for the report.
        claim_tests: how each claim is decided from the runs (pre-registered: arms, metric, direction,
            margins), for the verdict table of the report.
        dvae_stage: scale -> the shared dVAE stage of its SLATE runs (two-stage SLATE); a scale not listed
            trains SLATE jointly (official SLATE). ``reproduce --dvae`` overrides it.
    """

    name: str
    title: str
    source: str
    curves: tuple[Curve, ...]
    panels: tuple[CurvePanel, ...]
    final_metrics: tuple[str, ...]
    bar_metrics: tuple[str, ...] = ()
    paper_numbers: tuple[PaperNumber, ...] = ()
    evaluation: dict[str, EvaluationPlan] = field(default_factory=dict)
    claims: tuple[str, ...] = ()
    claim_tests: tuple[ClaimTest, ...] = ()
    dvae_stage: dict[str, DvaeStage] = field(default_factory=dict)

    def config_path(self, curve: Curve, scale: str) -> Path:
        """``configs/paper/<scale>/<curve.config>.yaml``."""
        return config_path(curve.config, scale)

    def paper_value(self, config: str, metric: str) -> str:
        """The paper's value for (config, metric), or "not reported"."""
        for number in self.paper_numbers:
            if number.config == config and number.metric == metric:
                return number.value
        return NOT_REPORTED


def config_path(config: str, scale: str) -> Path:
    """``configs/paper/<scale>/<config>.yaml``; an unknown scale raises ``ValueError`` listing the scales."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {list(SCALES)}")
    return CONFIG_ROOT / scale / f"{config}.yaml"


def config_names(scale: str) -> list[str]:
    """The config names of ``scale`` (sorted), without the shared bases (``_base*.yaml``) they build on.

    Raises:
        ValueError: an unknown scale (listing the scales).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {list(SCALES)}")
    return sorted(path.stem for path in (CONFIG_ROOT / scale).glob("*.yaml") if not path.name.startswith("_"))


# Evaluation sizes: the CPU scale evaluates a fixed subset (autoregressive generation is the slow part of
# SLATE's evaluation); the paper scale evaluates whole splits.
_SLATE_EVAL = {"cpu": EvaluationPlan("test", 128), "paper": EvaluationPlan("test", None)}
_SLATE_TRAIN = ("train:cross_entropy", "train:mse", "train:diag/jacobian_norm_mean")
_SLATE_EVAL_METRICS = ("mse_autoregressive", "mse_dvae", "cross_entropy", "fid", "proxy_feature_distance")
_CE = CurvePanel("cross_entropy", "cross entropy (sum over tokens, per image)", log_scale=True)
_JAC = CurvePanel("diag/jacobian_norm_mean", "Jacobian spectral norm of the SA cell", log_scale=True)
_GRAD = CurvePanel("grad_norm/main", "gradient L2 norm (main group, before clipping)", log_scale=True)
_RES = CurvePanel("diag/residual_mean", "forward relative residual", log_scale=True)
# SLATE claims at the CPU scale read the tokens of one shared dVAE per (dataset, resolution, seed): the arms
# of a comparison then differ only in what the claim varies, and the dVAE is trained once instead of once per
# arm. The paper scale keeps official SLATE's joint training.
_SLATE_STAGE = {"cpu": DvaeStage()}


def _pair(prefix: str, suffix: str = "", panel: str = "") -> tuple[Curve, Curve]:
    return (
        Curve(f"{prefix}_implicit{suffix}", f"implicit{suffix.replace('_', ' ')}", panel),
        Curve(f"{prefix}_vanilla{suffix}", f"vanilla{suffix.replace('_', ' ')}", panel),
    )


# Margins of the "similar" tests, fixed before the runs: within 10% (log10 1.1) for cross entropies, within a
# factor 2 (log10 2) for a norm that "stays stable" (the claim contrasts it with growth by orders of
# magnitude), 0.05 FG-ARI for masks of "the same quality". "Close to zero" for a relative residual: below 0.1.
_WITHIN_10_PERCENT = math.log10(1.1)
_WITHIN_FACTOR_2 = math.log10(2.0)
_RESIDUAL_BOUND = 0.1
_FG_ARI_MARGIN = 0.05
_JAC_MAX = "train_max:diag/jacobian_norm_max"
_CE_TRAIN = "train:cross_entropy"


def _lower(claim: str, metric: str, arm: str, against: str, log: bool = True) -> ClaimTest:
    return ClaimTest(claim, metric, "lower", arm, against, log=log)


def _higher(claim: str, metric: str, arm: str, against: str, log: bool = True) -> ClaimTest:
    return ClaimTest(claim, metric, "higher", arm, against, log=log)


def _table3_tests() -> tuple[ClaimTest, ...]:
    tests = []
    for data, text in (("clevr_mirror", "CLEVR-Mirror"), ("shapestacks", "ShapeStacks"), ("coco", "COCO")):
        arm, against = f"table3_{data}_implicit", f"table3_{data}_vanilla"
        # CPU stand-ins for ShapeStacks and COCO are procedural scenes: their runs say nothing about those
        # datasets, so only the paper scale judges those cells.
        scales = SCALES if data == "clevr_mirror" else ("paper",)
        tests += [
            ClaimTest(
                f"{text}: implicit has lower test MSE than vanilla",
                "mse_autoregressive",
                "lower",
                arm,
                against,
                log=True,
                scales=scales,
            ),
            ClaimTest(
                f"{text}: implicit has lower FID than vanilla (without Inception weights: the proxy "
                "feature distance, not FID)",
                "fid",
                "lower",
                arm,
                against,
                log=True,
                fallback_metric="proxy_feature_distance",
                scales=scales,
            ),
        ]
    return tuple(tests)


_TABLE3_NUMBERS = tuple(
    PaperNumber(f"table3_{data}_{kind}", metric, value)
    for data, kind, metric, value in (
        ("clevr_mirror", "implicit", "fid", "22.19"),
        ("clevr_mirror", "vanilla", "fid", "25.89"),
        ("clevr_mirror", "implicit", "mse_autoregressive", "10.66"),
        ("clevr_mirror", "vanilla", "mse_autoregressive", "67.04"),
        ("coco", "implicit", "fid", "127.79"),
        ("coco", "vanilla", "fid", "147.48"),
        ("coco", "implicit", "mse_autoregressive", "1659.15"),
        ("coco", "vanilla", "mse_autoregressive", "1821.75"),
        ("shapestacks", "implicit", "fid", "34.2"),
        ("shapestacks", "vanilla", "fid", "34.76"),
        ("shapestacks", "implicit", "mse_autoregressive", "108.67"),
        ("shapestacks", "vanilla", "mse_autoregressive", "312.14"),
    )
)

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            name="fig3a",
            title="Forward relative residual of slot attention during training",
            source="§4.2 / §5.2, Fig. 3a",
            curves=(Curve("fig3a_vanilla", "vanilla"), Curve("fig3a_implicit", "implicit (IN)")),
            panels=(_RES, CurvePanel("cross_entropy", "cross entropy", log_scale=True)),
            final_metrics=("train:diag/residual_mean", "train:diag/residual_max", "train:cross_entropy"),
            bar_metrics=("train:diag/residual_mean",),
            paper_numbers=(
                PaperNumber(
                    "fig3a_vanilla", "train:diag/residual_mean", "close to zero (Fig. 3a, no number)"
                ),
            ),
            evaluation=_SLATE_EVAL,
            dvae_stage=_SLATE_STAGE,
            claims=(
                "The forward relative residual of slot attention stays close to zero (it approximately "
                "converges to a fixed point).",
            ),
            claim_tests=tuple(
                ClaimTest(
                    f"{kind}: forward relative residual below {_RESIDUAL_BOUND}",
                    "train:diag/residual_mean",
                    "below",
                    f"fig3a_{kind}",
                    margin=_RESIDUAL_BOUND,
                )
                for kind in ("vanilla", "implicit")
            ),
        ),
        Experiment(
            name="fig3b",
            title="Vanilla vs the four implicit-differentiation variants (Table 2) on CLEVR-Mirror",
            source="§5.2, Fig. 3b, Table 2",
            curves=tuple(Curve(f"fig3b_{v}", v) for v in ("vanilla", "IB", "BB", "IN", "BN")),
            panels=(_CE, _JAC, _RES),
            final_metrics=(*_SLATE_TRAIN, "train_max:diag/jacobian_norm_max", *_SLATE_EVAL_METRICS),
            bar_metrics=("train:cross_entropy", "mse_autoregressive"),
            paper_numbers=(
                PaperNumber("fig3b_vanilla", "train:cross_entropy", "plateaus at about 130 (§5.2 text)"),
                PaperNumber("fig3b_BB", "train:cross_entropy", "about 10x lower than vanilla (§5.2 text)"),
                PaperNumber("fig3b_IN", "train:cross_entropy", "about 10x lower than vanilla (§5.2 text)"),
                PaperNumber("fig3b_BN", "train:cross_entropy", "about 10x lower than vanilla (§5.2 text)"),
                PaperNumber("fig3b_IB", "train:cross_entropy", "less stable than BB/IN/BN (§5.2 text)"),
            ),
            evaluation=_SLATE_EVAL,
            dvae_stage=_SLATE_STAGE,
            claims=(
                "Three of four implicit variants (BB, IN, BN) reach a much lower (about 10x) cross entropy "
                "than vanilla slot attention; IB is less stable.",
                "BB, IN and BN follow the same learning curve.",
            ),
            claim_tests=(
                *(
                    _lower(
                        f"{v} reaches a lower cross entropy than vanilla",
                        _CE_TRAIN,
                        f"fig3b_{v}",
                        "fig3b_vanilla",
                    )
                    for v in ("BB", "IN", "BN")
                ),
                _higher("IB is less stable: higher cross entropy than IN", _CE_TRAIN, "fig3b_IB", "fig3b_IN"),
                *(
                    ClaimTest(
                        f"{v} follows IN's curve: final cross entropy within 10%",
                        _CE_TRAIN,
                        "similar",
                        f"fig3b_{v}",
                        "fig3b_IN",
                        log=True,
                        margin=_WITHIN_10_PERCENT,
                    )
                    for v in ("BB", "BN")
                ),
            ),
        ),
        Experiment(
            name="table3",
            title="Implicit vs vanilla SLATE: reconstruction through the slot bottleneck",
            source="§5.3, Table 3",
            curves=tuple(
                Curve(f"table3_{data}_{kind}", f"{text} {kind}")
                for data, text in (
                    ("clevr_mirror", "CLEVR-Mirror"),
                    ("shapestacks", "ShapeStacks"),
                    ("coco", "COCO"),
                )
                for kind in ("implicit", "vanilla")
            ),
            panels=(_CE, _JAC),
            final_metrics=(
                "mse_autoregressive",
                "fid",
                "proxy_feature_distance",
                "mse_dvae",
                "cross_entropy",
                *_SLATE_TRAIN,
            ),
            bar_metrics=("mse_autoregressive", "train:cross_entropy"),
            paper_numbers=_TABLE3_NUMBERS,
            evaluation=_SLATE_EVAL,
            dvae_stage=_SLATE_STAGE,
            claims=(
                "Implicit SLATE has lower test MSE and FID than vanilla SLATE on all three datasets "
                "(CLEVR-Mirror MSE almost 7x lower).",
            ),
            claim_tests=_table3_tests(),
        ),
        Experiment(
            name="fig5",
            title="Removing optimisation tricks (clipping, warm-up, decay) from implicit and vanilla SLATE",
            source="§5.4, Fig. 5",
            curves=tuple(
                curve
                for trick in ("_all_tricks", "_no_clip", "_no_warmup", "_no_decay")
                for curve in _pair("fig5", trick)
            ),
            panels=(_CE, _JAC, _GRAD),
            final_metrics=(
                *_SLATE_TRAIN,
                "train_max:diag/jacobian_norm_max",
                "train:grad_norm/main",
                "train_max:grad_norm/main",
                *_SLATE_EVAL_METRICS,
            ),
            bar_metrics=("train:cross_entropy", "train:diag/jacobian_norm_mean"),
            paper_numbers=(
                PaperNumber(
                    "fig5_vanilla_no_clip", "train_max:diag/jacobian_norm_max", "explodes (§5.4 text)"
                ),
                PaperNumber(
                    "fig5_implicit_no_clip", "train_max:diag/jacobian_norm_max", "stays stable (§5.4 text)"
                ),
                PaperNumber("fig5_vanilla_no_warmup", "train:cross_entropy", "unstable (§5.4 text)"),
                PaperNumber(
                    "fig5_implicit_no_warmup", "train:cross_entropy", "unstable in 1 of 3 seeds (§5.4 text)"
                ),
                PaperNumber(
                    "fig5_vanilla_no_decay",
                    "train:diag/jacobian_norm_mean",
                    "higher than with decay (§5.4 text)",
                ),
            ),
            evaluation=_SLATE_EVAL,
            dvae_stage=_SLATE_STAGE,
            claims=(
                "Without gradient clipping the Jacobian norm of vanilla SLATE explodes; implicit's stays "
                "stable.",
                "Without warm-up vanilla becomes unstable; implicit only in one of three seeds.",
                "Learning-rate decay keeps the Jacobian norm down but hurts optimisation for both.",
            ),
            claim_tests=(
                _higher(
                    "no clipping: vanilla's Jacobian norm grows above implicit's",
                    _JAC_MAX,
                    "fig5_vanilla_no_clip",
                    "fig5_implicit_no_clip",
                ),
                _higher(
                    "no clipping: vanilla's Jacobian norm grows above vanilla's with clipping",
                    _JAC_MAX,
                    "fig5_vanilla_no_clip",
                    "fig5_vanilla_all_tricks",
                ),
                ClaimTest(
                    "no clipping: implicit's Jacobian norm stays within 2x of implicit's with clipping",
                    _JAC_MAX,
                    "similar",
                    "fig5_implicit_no_clip",
                    "fig5_implicit_all_tricks",
                    log=True,
                    margin=_WITHIN_FACTOR_2,
                ),
                _higher(
                    "no clipping: vanilla trains worse than with clipping (higher cross entropy)",
                    _CE_TRAIN,
                    "fig5_vanilla_no_clip",
                    "fig5_vanilla_all_tricks",
                ),
                ClaimTest(
                    "no clipping: implicit trains as with clipping (cross entropy within 10%)",
                    _CE_TRAIN,
                    "similar",
                    "fig5_implicit_no_clip",
                    "fig5_implicit_all_tricks",
                    log=True,
                    margin=_WITHIN_10_PERCENT,
                ),
                _higher(
                    "no warm-up: vanilla's Jacobian norm grows above vanilla's with warm-up",
                    _JAC_MAX,
                    "fig5_vanilla_no_warmup",
                    "fig5_vanilla_all_tricks",
                ),
                ClaimTest(
                    "no warm-up: implicit trains as with warm-up (cross entropy within 10%)",
                    _CE_TRAIN,
                    "similar",
                    "fig5_implicit_no_warmup",
                    "fig5_implicit_all_tricks",
                    log=True,
                    margin=_WITHIN_10_PERCENT,
                ),
                _higher(
                    "no warm-up: vanilla trains worse than with warm-up (higher cross entropy)",
                    _CE_TRAIN,
                    "fig5_vanilla_no_warmup",
                    "fig5_vanilla_all_tricks",
                ),
                _lower(
                    "no warm-up: implicit trains better than vanilla (lower cross entropy)",
                    _CE_TRAIN,
                    "fig5_implicit_no_warmup",
                    "fig5_vanilla_no_warmup",
                ),
                _higher(
                    "no decay: vanilla's Jacobian norm is higher than with decay",
                    "train:diag/jacobian_norm_mean",
                    "fig5_vanilla_no_decay",
                    "fig5_vanilla_all_tricks",
                ),
                *(
                    _lower(
                        f"no decay: {kind} optimises better (lower cross entropy than with decay)",
                        _CE_TRAIN,
                        f"fig5_{kind}_no_decay",
                        f"fig5_{kind}_all_tricks",
                    )
                    for kind in ("implicit", "vanilla")
                ),
            ),
        ),
        Experiment(
            name="fig6",
            title="Gradient norms without clipping, iteration counts, vanilla with one iteration",
            source="§5.4-5.5, Fig. 6a-c",
            curves=(
                *_pair("fig6a", "_no_clip", panel="a"),
                *(
                    Curve(f"fig6b_{kind}_iter{n}", f"{kind} {n} it.", "b")
                    for kind in ("implicit", "vanilla")
                    for n in (1, 3, 7)
                ),
                Curve("fig6c_implicit_iter7", "implicit 7 it.", "c"),
                Curve("fig6c_vanilla_iter1", "vanilla 1 it.", "c"),
            ),
            panels=(
                CurvePanel("grad_norm/main", "(a) gradient norm, no clipping", log_scale=True, panel="a"),
                CurvePanel("cross_entropy", "(b) cross entropy vs iterations", log_scale=True, panel="b"),
                CurvePanel("cross_entropy", "(c) cross entropy", log_scale=True, panel="c"),
            ),
            final_metrics=(
                "train:grad_norm/main",
                "train_max:grad_norm/main",
                *_SLATE_TRAIN,
                "train_max:diag/jacobian_norm_max",
                "mse_autoregressive",
                "mse_dvae",
            ),
            bar_metrics=("train:cross_entropy", "mse_autoregressive"),
            paper_numbers=(
                PaperNumber("fig6a_vanilla_no_clip", "train_max:grad_norm/main", "explodes (Fig. 6a)"),
                PaperNumber("fig6a_implicit_no_clip", "train_max:grad_norm/main", "stays small (Fig. 6a)"),
                PaperNumber("fig6c_vanilla_iter1", "mse_autoregressive", "about 2x implicit's (§5.5 text)"),
            ),
            evaluation=_SLATE_EVAL,
            dvae_stage=_SLATE_STAGE,
            claims=(
                "Without clipping, implicit keeps gradients small while vanilla's explode (6a).",
                "Implicit is insensitive to the number of iterations; vanilla trains worse with more (6b).",
                "Vanilla with one iteration trains stably but has about 2x the MSE of implicit with 7 (6c).",
            ),
            claim_tests=(
                _higher(
                    "(a) no clipping: vanilla's gradient norm grows above implicit's",
                    "train_max:grad_norm/main",
                    "fig6a_vanilla_no_clip",
                    "fig6a_implicit_no_clip",
                ),
                *(
                    ClaimTest(
                        f"(b) implicit with {n} iteration(s) reaches the cross entropy of 7, within 10%",
                        _CE_TRAIN,
                        "similar",
                        f"fig6b_implicit_iter{n}",
                        "fig6b_implicit_iter7",
                        log=True,
                        margin=_WITHIN_10_PERCENT,
                    )
                    for n in (1, 3)
                ),
                _higher(
                    "(b) vanilla with 7 iterations trains worse than with 1 (higher cross entropy)",
                    _CE_TRAIN,
                    "fig6b_vanilla_iter7",
                    "fig6b_vanilla_iter1",
                ),
                _higher(
                    "(c) vanilla with 1 iteration has a higher test MSE than implicit with 7",
                    "mse_autoregressive",
                    "fig6c_vanilla_iter1",
                    "fig6c_implicit_iter7",
                ),
            ),
        ),
        Experiment(
            name="fig7",
            title="Set prediction (object property prediction) average precision",
            source="§5.5, Fig. 7",
            curves=(
                Curve("fig7_implicit", "implicit (3 it.)"),
                Curve("fig7_vanilla", "vanilla (3 it.)"),
                Curve("fig7_vanilla_iter1", "vanilla (1 it.)"),
            ),
            panels=(
                CurvePanel("loss", "Hungarian-Huber loss", log_scale=True),
                CurvePanel(
                    "diag/jacobian_norm_mean", "Jacobian spectral norm of the SA cell", log_scale=True
                ),
            ),
            final_metrics=("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "train:loss"),
            bar_metrics=("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"),
            paper_numbers=(),
            evaluation={"cpu": EvaluationPlan("test", None), "paper": EvaluationPlan("val", None)},
            claims=(
                "Implicit slot attention outperforms vanilla on property prediction AP; one vanilla "
                "iteration does not close the gap (Fig. 7 has no numbers).",
            ),
            claim_tests=tuple(
                _higher(
                    f"implicit has a higher AP{t} than {label}", f"ap_{t}", "fig7_implicit", arm, log=False
                )
                for t in ("inf", "1", "0.5")
                for arm, label in (
                    ("fig7_vanilla", "vanilla (3 it.)"),
                    ("fig7_vanilla_iter1", "vanilla (1 it.)"),
                )
            ),
        ),
        Experiment(
            name="fig8",
            title="Slot-attention autoencoder masks (spatial broadcast decoder)",
            source="§5.6, Fig. 8",
            curves=(Curve("fig8_implicit", "implicit (IN)"), Curve("fig8_vanilla", "vanilla")),
            panels=(
                CurvePanel("loss", "reconstruction MSE", log_scale=True),
                CurvePanel(
                    "diag/jacobian_norm_mean", "Jacobian spectral norm of the SA cell", log_scale=True
                ),
            ),
            final_metrics=("fg_ari", "fg_ari_attention", "ari", "mse", "train:loss"),
            bar_metrics=("fg_ari", "ari"),
            paper_numbers=(),
            evaluation={"cpu": EvaluationPlan("test", 256), "paper": EvaluationPlan("test", 1000)},
            claims=("Implicit differentiation preserves the quality of the masks (Fig. 8 is qualitative).",),
            claim_tests=(
                ClaimTest(
                    f"implicit's FG-ARI within {_FG_ARI_MARGIN} of vanilla's",
                    "fg_ari",
                    "similar",
                    "fig8_implicit",
                    "fig8_vanilla",
                    margin=_FG_ARI_MARGIN,
                ),
            ),
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    """Look up an experiment; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; valid: {' '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
