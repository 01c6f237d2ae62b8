"""Verdicts on the paper's claims: the t interval, the decision rule of every kind of test, pairing by seed,
and the tables `reproduce` writes, from fake run folders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_runs import write_fake_run
from scipy import stats

from implicit_slots.reproduce.aggregate import RunRecord, load_run
from implicit_slots.reproduce.experiments import EXPERIMENTS, ClaimTest, get_experiment
from implicit_slots.reproduce.report import VERDICTS_FILE, write_reports
from implicit_slots.reproduce.verdicts import (
    CONTRADICTED,
    EQUIVALENCE_CONFIDENCE,
    INCONCLUSIVE,
    NO_USABLE_SEEDS,
    NOT_RUN,
    NOT_TESTABLE,
    SUPPORTED,
    decide,
    judge,
    t_interval,
)


def test_t_interval_matches_scipy_and_a_hand_computation() -> None:
    values = [1.0, 2.0, 4.0]
    low, high = t_interval(values)
    mean, sem = 7.0 / 3.0, stats.sem(values)
    expected = stats.t.interval(0.95, df=2, loc=mean, scale=sem)
    assert (low, high) == pytest.approx(expected)
    # t(0.975, 2) = 4.3027; sample std of (1, 2, 4) = 1.5275.
    assert high - mean == pytest.approx(4.3027 * 1.5275 / math.sqrt(3), rel=1e-4)
    with pytest.raises(ValueError, match="at least two"):
        t_interval([1.0])


@pytest.mark.parametrize(
    ("kind", "margin", "interval", "expected"),
    [
        ("lower", 0.0, (-2.0, -1.0), SUPPORTED),
        ("lower", 0.0, (1.0, 2.0), CONTRADICTED),
        ("lower", 0.0, (-1.0, 1.0), INCONCLUSIVE),
        ("higher", 0.0, (1.0, 2.0), SUPPORTED),
        ("higher", 0.0, (-2.0, -1.0), CONTRADICTED),
        ("higher", 0.0, (-1.0, 1.0), INCONCLUSIVE),
        ("similar", 0.5, (-0.2, 0.3), SUPPORTED),
        ("similar", 0.5, (0.6, 0.9), CONTRADICTED),
        ("similar", 0.5, (-0.9, -0.6), CONTRADICTED),
        ("similar", 0.5, (-0.2, 0.7), INCONCLUSIVE),
        ("below", 0.1, (0.02, 0.08), SUPPORTED),
        ("below", 0.1, (0.12, 0.2), CONTRADICTED),
        ("below", 0.1, (0.05, 0.15), INCONCLUSIVE),
    ],
)
def test_decision_rule(kind: str, margin: float, interval: tuple[float, float], expected: str) -> None:
    test = ClaimTest("c", "m", kind, "a", None if kind == "below" else "b", margin=margin)
    assert decide(test, interval) == expected


def test_claim_test_rejects_inconsistent_definitions() -> None:
    with pytest.raises(ValueError, match="unknown claim test kind 'less'"):
        ClaimTest("c", "m", "less", "a", "b")
    with pytest.raises(ValueError, match="'below' takes no 'against'"):
        ClaimTest("c", "m", "below", "a", "b", margin=1.0)
    with pytest.raises(ValueError, match="'below' takes no 'against'"):
        ClaimTest("c", "m", "lower", "a")
    with pytest.raises(ValueError, match="positive margin"):
        ClaimTest("c", "m", "similar", "a", "b")


def _runs(tmp_path: Path, name: str, values: dict[int, float], **kwargs: object) -> list[RunRecord]:
    runs = []
    for seed, value in values.items():
        write_fake_run(tmp_path / name / f"seed{seed}", eval_metrics={"mse": value}, **kwargs)  # type: ignore[arg-type]
        record = load_run(tmp_path / name / f"seed{seed}", seed)
        assert record is not None
        runs.append(record)
    return runs


def test_judge_pairs_by_seed_on_a_log_scale(tmp_path: Path) -> None:
    # Seed 3 of the arm has no partner and is left out; the ratios are 0.5, 0.4, 0.45.
    arm = _runs(tmp_path, "a", {0: 10.0, 1: 20.0, 2: 18.0, 3: 1.0})
    against = _runs(tmp_path, "b", {0: 20.0, 1: 50.0, 2: 40.0})
    test = ClaimTest("a is lower", "mse", "lower", "a", "b", log=True)
    verdict = judge(test, {"a": arm, "b": against})
    assert verdict.seeds == [0, 1, 2]
    assert verdict.arm_values == [10.0, 20.0, 18.0] and verdict.against_values == [20.0, 50.0, 40.0]
    differences = [math.log10(0.5), math.log10(0.4), math.log10(0.45)]
    assert verdict.effect == pytest.approx(sum(differences) / 3)
    assert verdict.interval == pytest.approx(t_interval(differences))
    assert verdict.verdict == SUPPORTED  # interval of the log ratio about [-0.47, -0.23]
    # The same ratios spread wider (0.5, 0.5, 0.25) leave the interval across 0 with three seeds.
    wide = _runs(tmp_path, "c", {0: 10.0, 1: 25.0, 2: 10.0})
    assert judge(test, {"a": wide, "b": against}).verdict == INCONCLUSIVE


def test_judge_leaves_out_unfinished_diverged_and_unpaired_seeds_and_says_so(tmp_path: Path) -> None:
    arm = _runs(tmp_path, "a", {0: 1.0, 1: 2.0, 4: 1.0})
    arm += _runs(tmp_path, "a_partial", {2: 3.0}, last_step=50)
    against = _runs(tmp_path, "b", {0: 2.0, 1: 1.0, 2: 5.0})
    against += _runs(tmp_path, "b_diverged", {3: 9.0}, last_step=30, diverged=True)
    verdict = judge(ClaimTest("c", "mse", "lower", "a", "b"), {"a": arm, "b": against})
    assert verdict.seeds == [0, 1]
    assert "a: seed 2 not finished (step 50)" in verdict.note
    assert "b: seed 3 diverged at step 30" in verdict.note
    assert "unpaired seed(s) left out: 2, 4" in verdict.note
    assert verdict.diverged == {"b": [3]}
    assert verdict.verdict == INCONCLUSIVE  # differences -1 and +1


def test_judge_with_one_seed_or_none(tmp_path: Path) -> None:
    arm, against = _runs(tmp_path, "a", {0: 1.0}), _runs(tmp_path, "b", {0: 2.0})
    assert arm[0].eval_step is not None
    one = judge(ClaimTest("c", "mse", "lower", "a", "b"), {"a": arm, "b": against})
    assert (one.verdict, one.effect, one.interval) == (INCONCLUSIVE, -1.0, None)
    assert "fewer than two seeds" in one.note
    assert judge(ClaimTest("c", "mse", "lower", "x", "y"), {}).verdict == NOT_RUN
    partial = _runs(tmp_path, "p", {0: 1.0}, last_step=50)
    assert (
        judge(ClaimTest("c", "mse", "lower", "p", "b"), {"p": partial, "b": against}).verdict
        == NO_USABLE_SEEDS
    )
    unevaluated = judge(ClaimTest("c", "fid", "lower", "a", "b"), {"a": arm, "b": against})
    assert unevaluated.verdict == NO_USABLE_SEEDS and "a: seed 0 has no value" in unevaluated.note


def test_similar_uses_the_90_percent_interval(tmp_path: Path) -> None:
    # Differences 0.02, 0.04, 0.06: the 90% interval (t = 2.92) is [0.006, 0.074], inside a 0.08 margin;
    # the 95% interval (t = 4.30) is [-0.010, 0.090], which would not be.
    arm = _runs(tmp_path, "a", {0: 1.02, 1: 1.04, 2: 1.06})
    against = _runs(tmp_path, "b", {0: 1.0, 1: 1.0, 2: 1.0})
    verdict = judge(ClaimTest("c", "mse", "similar", "a", "b", margin=0.08), {"a": arm, "b": against})
    differences = [0.02, 0.04, 0.06]
    assert verdict.interval == pytest.approx(t_interval(differences, EQUIVALENCE_CONFIDENCE))
    assert verdict.verdict == SUPPORTED
    assert t_interval(differences)[1] > 0.08


def test_a_fallback_metric_is_used_only_when_no_run_has_the_first(tmp_path: Path) -> None:
    test = ClaimTest("c", "fid", "lower", "a", "b", fallback_metric="mse")
    arm, against = _runs(tmp_path, "a", {0: 1.0, 1: 2.0}), _runs(tmp_path, "b", {0: 2.0, 1: 3.0})
    assert judge(test, {"a": arm, "b": against}).metric == "mse"
    write_fake_run(tmp_path / "f", eval_metrics={"fid": 5.0})
    with_fid = load_run(tmp_path / "f", 0)
    assert with_fid is not None
    assert judge(test, {"a": [with_fid], "b": against}).metric == "fid"


def test_every_claim_test_names_curves_of_its_experiment() -> None:
    for experiment in EXPERIMENTS.values():
        curves = {curve.config for curve in experiment.curves}
        assert experiment.claim_tests, f"{experiment.name} has no claim tests"
        for test in experiment.claim_tests:
            assert test.arm in curves, (experiment.name, test.arm)
            assert test.against is None or test.against in curves, (experiment.name, test.against)
            assert test.metric in experiment.final_metrics, (experiment.name, test.metric)
            assert test.fallback_metric in (None, *experiment.final_metrics), (experiment.name, test.claim)


def test_reports_carry_the_verdicts(tmp_path: Path) -> None:
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    for seed, (implicit, vanilla) in enumerate([(60.0, 75.0), (62.0, 80.0), (58.0, 70.0)]):
        for kind, mse in (("implicit", implicit), ("vanilla", vanilla)):
            write_fake_run(
                runs_dir / f"table3_clevr_mirror_{kind}" / f"seed{seed}",
                eval_metrics={"mse_autoregressive": mse, "proxy_feature_distance": 1.0},
            )
    written = write_reports([get_experiment("table3")], "cpu", 3, runs_dir, out, command="cmd")
    assert [path.name for path in written] == ["table3.png", "table3.md", "verdicts.png", VERDICTS_FILE]
    summary = (out / VERDICTS_FILE).read_text()
    mse_row = next(
        line for line in summary.splitlines() if "CLEVR-Mirror: implicit has lower test MSE" in line
    )
    assert "**supported**" in mse_row and "| 3 |" in mse_row
    feature_row = next(
        line for line in summary.splitlines() if "CLEVR-Mirror: implicit has lower FID" in line
    )
    assert "**inconclusive**" in feature_row  # equal values: a zero-width interval at 0
    assert "**not testable at this scale**" in summary  # the ShapeStacks and COCO stand-ins
    assert (out / "verdicts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![verdicts](verdicts.png)" in summary
    report = (out / "table3.md").read_text()
    assert "60, 62, 58" in report and "75, 80, 70" in report


def test_a_claim_outside_its_scales_is_not_testable_there(tmp_path: Path) -> None:
    test = ClaimTest("coco", "mse", "lower", "a", "b", scales=("paper",))
    arm, against = _runs(tmp_path, "a", {0: 1.0, 1: 2.0}), _runs(tmp_path, "b", {0: 2.0, 1: 3.0})
    here = judge(test, {"a": arm, "b": against}, scale="cpu")
    assert (here.verdict, here.seeds) == (NOT_TESTABLE, [])
    assert "paper scale" in here.note
    assert judge(test, {"a": arm, "b": against}, scale="paper").verdict == SUPPORTED  # both seeds -1
    table3 = {t.claim: t for t in get_experiment("table3").claim_tests}
    assert table3["COCO: implicit has lower test MSE than vanilla"].scales == ("paper",)
    assert "cpu" in table3["CLEVR-Mirror: implicit has lower test MSE than vanilla"].scales
