"""`reproduce`: planning (shared runs, skip/resume states), aggregation over seeds, the table and the figure,
from fake finished runs written here."""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_runs import write_fake_run

from implicit_slots.cli import main
from implicit_slots.reproduce.aggregate import (
    aggregate_curve,
    aggregate_final,
    final_value,
    load_run,
)
from implicit_slots.reproduce.experiments import EXPERIMENTS, NOT_REPORTED, get_experiment
from implicit_slots.reproduce.report import collect_runs, results_table, write_reports
from implicit_slots.reproduce.runs import (
    RUN_STATUS_FILE,
    ExecutionOptions,
    ReproduceError,
    _run_one,
    _StopForwarder,
    build_plan,
    evaluate_command,
    execute_plan,
    inspect_run,
    train_command,
)
from implicit_slots.training.checkpoint import CHECKPOINT_FORMAT_VERSION
from implicit_slots.training.lock import RunFolderLock


def test_list_prints_the_seven_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["fig3a", "fig3b", "table3", "fig5", "fig6", "fig7", "fig8"]


def test_unknown_experiment_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "fig9"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'fig9'" in err and "fig3b" in err


def test_final_value_is_the_mean_of_the_last_tenth_and_seeds_aggregate(tmp_path: Path) -> None:
    write_fake_run(tmp_path / "a", cross_entropy=50.0, eval_metrics={"mse_autoregressive": 10.0})
    write_fake_run(tmp_path / "b", cross_entropy=60.0, eval_metrics={"mse_autoregressive": 14.0})
    runs = [load_run(tmp_path / "a", 0), load_run(tmp_path / "b", 1)]
    assert all(r is not None and r.finished for r in runs)
    a, b = runs[0], runs[1]
    assert a is not None and b is not None
    # last 10% of 100 steps: steps 90 and 100 -> CE 60 and 50.
    assert final_value(a, "train:cross_entropy") == pytest.approx(55.0)
    assert final_value(a, "train:diag/jacobian_norm_mean") == pytest.approx(1.0)  # only step 100 (>= 90)
    assert final_value(a, "mse_autoregressive") == 10.0
    assert final_value(a, "fid") is None
    stat = aggregate_final([a, b], "mse_autoregressive")
    assert stat is not None
    assert (stat.mean, stat.count) == (12.0, 2)
    assert stat.std == pytest.approx(math.sqrt(8.0))  # sample std of (10, 14)
    assert stat.format() == "12 ± 2.8"
    curve = aggregate_curve([a, b], "cross_entropy")
    assert curve is not None
    np.testing.assert_allclose(curve.mean[-1], 55.0)
    np.testing.assert_array_equal(curve.count, 2)


def test_curves_of_unequal_length_average_what_exists(tmp_path: Path) -> None:
    write_fake_run(tmp_path / "a")
    write_fake_run(tmp_path / "b", last_step=50, diverged=True)
    a, b = load_run(tmp_path / "a", 0), load_run(tmp_path / "b", 1)
    assert a is not None and b is not None and b.diverged and b.finished
    curve = aggregate_curve([a, b], "cross_entropy")
    assert curve is not None
    assert curve.count.tolist() == [2] * 5 + [1] * 5
    assert curve.std[-1] == 0.0


def _fake_experiment_runs(runs_dir: Path, experiment: str, seeds: int = 2) -> None:
    for index, curve in enumerate(get_experiment(experiment).curves):
        for seed in range(seeds):
            write_fake_run(
                runs_dir / curve.config / f"seed{seed}",
                cross_entropy=10.0 * (index + 1) + seed,
                eval_metrics={"mse_autoregressive": 100.0 + index, "proxy_feature_distance": 1.0},
            )


def test_report_table_and_figure_from_fake_runs(tmp_path: Path) -> None:
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    _fake_experiment_runs(runs_dir, "table3")
    # One vanilla seed diverged, one implicit seed is missing.
    write_fake_run(runs_dir / "table3_coco_vanilla" / "seed1", last_step=40, diverged=True)
    (runs_dir / "table3_coco_implicit" / "seed1" / "metrics.jsonl").unlink()
    experiment = get_experiment("table3")
    table = results_table(experiment, collect_runs(experiment, 2, runs_dir))
    lines = table.splitlines()
    assert lines[0].startswith("| curve | config | seeds | mse_autoregressive |")
    clevr = next(line for line in lines if "`table3_clevr_mirror_implicit`" in line)
    # CE over seeds of the mean over steps 90 and 100: seed 0 (20 + 10) / 2, seed 1 (21 + 11) / 2.
    assert "| 100 ± 0 |" in clevr and "| 15.5 ± 0.71 |" in clevr
    assert "mse_autoregressive: 10.66" in clevr and "fid: 22.19" in clevr
    coco = next(line for line in lines if "`table3_coco_vanilla`" in line)
    assert "diverged (NaN/Inf) in seed(s) 1 at step 40" in coco
    assert "1/2 seeds finished" in next(line for line in lines if "`table3_coco_implicit`" in line)

    written = write_reports([experiment, get_experiment("fig8")], "cpu", 2, runs_dir, out, command="cmd")
    assert [p.name for p in written] == [
        "table3.png",
        "table3.md",
        "fig8.png",
        "fig8.md",
        "verdicts.png",
        "verdicts.md",
    ]
    assert (out / "table3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig8 = (out / "fig8.md").read_text()
    assert NOT_REPORTED in fig8 and "| 0 |" in fig8  # no fig8 runs: zero seeds, the paper has no number


def test_cli_report_only_writes_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    _fake_experiment_runs(runs_dir, "fig3b", seeds=1)
    argv = [
        "reproduce",
        "fig3b",
        "--seeds",
        "1",
        "--runs-dir",
        str(runs_dir),
        "--report-only",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = (out / "fig3b.md").read_text()
    assert "about 130" in text and "![fig3b](fig3b.png)" in text
    assert "written: " in capsys.readouterr().out
    # --dvae joint reads the fake runs where they stand (runs_dir/CONFIG/seedS) and names its reports *_joint.
    argv += ["--dvae", "joint"]
    assert main(argv) == 0
    assert "| 1 |" in (out / "fig3b_joint.md").read_text()  # one seed per curve was read
    capsys.readouterr()

    # A damaged record in the middle of a run's log is one line naming it, not a report without it.
    for metrics in runs_dir.rglob("metrics.jsonl"):
        metrics.write_text("{oops\n" + metrics.read_text())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(r"metrics\.jsonl: line 1 of \d+ is not a JSON record", err), err


def test_plan_shares_identical_configs_and_orders_by_experiment(tmp_path: Path) -> None:
    plan = build_plan([EXPERIMENTS["fig3a"], EXPERIMENTS["fig3b"]], "cpu", 2, tmp_path, dvae="joint")
    names = [(spec.config_name, spec.seed) for spec in plan]
    # At CPU scale Fig. 3a's runs are Fig. 3b's are Table 3's CLEVR-Mirror runs: trained once.
    assert names[:4] == [
        ("table3_clevr_mirror_vanilla", 0),
        ("table3_clevr_mirror_vanilla", 1),
        ("table3_clevr_mirror_implicit", 0),
        ("table3_clevr_mirror_implicit", 1),
    ]
    assert len(plan) == 10  # 5 fig3b curves x 2 seeds, fig3a adds nothing
    vanilla = plan[0]
    assert {"fig3a_vanilla", "fig3b_vanilla", "fig5_vanilla_all_tricks"} <= set(vanilla.aliases)
    assert vanilla.config.training.seed == 0 and plan[1].config.training.seed == 1
    assert vanilla.run_dir == tmp_path / "table3_clevr_mirror_vanilla" / "seed0"
    # At paper scale Fig. 3b is 64x64 and Table 3 96x96: different runs.
    paper = build_plan([EXPERIMENTS["fig3b"]], "paper", 1, tmp_path, only=["fig3b_vanilla"])
    assert [spec.config_name for spec in paper] == ["fig3a_vanilla"]
    with pytest.raises(ReproduceError, match="matches no config"):
        build_plan([EXPERIMENTS["fig7"]], "cpu", 1, tmp_path, only=["fig3*"])


def _fake_checkpoint(run_dir: Path, step: int) -> None:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format_version": CHECKPOINT_FORMAT_VERSION, "step": step}, run_dir / "checkpoints" / "last.pt"
    )


def test_run_states_decide_skip_resume_and_evaluate(tmp_path: Path) -> None:
    plan = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    (spec,) = plan
    steps = spec.config.training.max_steps
    state = inspect_run(spec.run_dir, steps)
    assert (state.checkpoint_step, state.trained, state.complete) == (None, False, False)
    assert train_command(spec, state, "py")[:4] == ["py", "-m", "implicit_slots.cli", "train"]
    assert "training.seed=0" in train_command(spec, state, "py")

    _fake_checkpoint(spec.run_dir, 400)
    state = inspect_run(spec.run_dir, steps)
    assert not state.trained
    assert train_command(spec, state, "py")[4:] == [
        "--resume",
        str(spec.run_dir),
        f"training.max_steps={steps}",
    ]

    _fake_checkpoint(spec.run_dir, steps)
    assert inspect_run(spec.run_dir, steps).trained and not inspect_run(spec.run_dir, steps).complete
    command = evaluate_command(spec, ExecutionOptions(device="cpu"))
    assert command[-6:] == ["--split", "test", "--device", "cpu", "--max-images", "256"]

    (spec.run_dir / "eval").mkdir()
    (spec.run_dir / "eval" / "metrics.json").write_text(json.dumps({"checkpoint_step": steps, "metrics": {}}))
    assert inspect_run(spec.run_dir, steps).complete
    messages: list[str] = []
    (result,) = execute_plan(plan, ExecutionOptions(echo=messages.append, dry_run=True))
    assert result.status == "complete" and not result.trained and "complete, skipped" in messages[-1]


def test_a_run_folder_of_another_experiment_is_refused(tmp_path: Path) -> None:
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    spec.run_dir.mkdir(parents=True)
    other = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_vanilla"])[0]
    from implicit_slots.config import save_config

    save_config(other.config, spec.run_dir / "config.yaml")
    with pytest.raises(ReproduceError, match="holds a different experiment"):
        execute_plan([spec], ExecutionOptions(dry_run=True, echo=lambda _: None))


def test_an_unreadable_checkpoint_stops_the_plan_and_keeps_the_folder(tmp_path: Path) -> None:
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    _fake_checkpoint(spec.run_dir, 400)
    checkpoint = spec.run_dir / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:20])  # truncated (a damaged disk, a bad copy)
    (spec.run_dir / "metrics.jsonl").write_text(json.dumps({"step": 400, "loss": 1.0}) + "\n")
    # Not "no checkpoint, start afresh": that would delete 400 steps of a run that may be repairable.
    with pytest.raises(ReproduceError, match=r"last\.pt.*cannot be resumed"):
        execute_plan([spec], ExecutionOptions(echo=lambda _: None, dry_run=True))
    assert checkpoint.is_file() and (spec.run_dir / "metrics.jsonl").is_file()


def test_a_dry_run_deletes_nothing(tmp_path: Path) -> None:
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    messages: list[str] = []
    execute_plan([spec], ExecutionOptions(echo=messages.append, dry_run=True))
    assert (spec.run_dir / "metrics.jsonl").is_file()
    assert any("$ " in message and " train " in message for message in messages)


def test_a_folder_another_process_is_training_is_not_deleted(tmp_path: Path) -> None:
    # A live `train` holds RUN_DIR/train.lock before its first checkpoint: the folder has no checkpoint yet,
    # which `reproduce` would otherwise take for a run killed early and delete.
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    holder = RunFolderLock(spec.run_dir)
    holder.acquire()
    messages: list[str] = []
    try:
        result = _run_one(spec, ExecutionOptions(echo=messages.append), threading.Lock(), _StopForwarder())
    finally:
        holder.release()
    assert result.status == "train-failed" and "is being trained by process" in result.message
    assert (spec.run_dir / "metrics.jsonl").is_file()
    assert any("not started" in message for message in messages)


def test_train_max_is_the_largest_finite_value_of_the_run(tmp_path: Path) -> None:
    write_fake_run(tmp_path / "a")
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lines.append(json.dumps({"step": 110, "diag/jacobian_norm_mean": None}))  # a NaN step is skipped
    (tmp_path / "a" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(tmp_path / "a", 0)
    assert run is not None
    assert final_value(run, "train_max:diag/jacobian_norm_mean") == 1.0
    assert final_value(run, "train_max:cross_entropy") == 140.0  # step 10: 50 + 90
    assert final_value(run, "train_max:grad_norm/main") is None


def test_a_diverging_training_subprocess_is_recorded_and_then_skipped(tmp_path: Path) -> None:
    # A real `implicit-slots train` subprocess that diverges: lr 1e30 overflows the weights after one
    # update, so the next steps have an Inf/NaN loss and train exits with DIVERGED_EXIT_CODE.
    tiny = [
        "data.num_samples.train=32",
        "data.num_samples.val=8",
        "data.num_samples.test=8",
        "training.batch_size=4",
        "training.max_steps=20",
        "training.optimizer.lr=1e30",
        "training.optimizer.warmup_steps=0",
        "training.max_consecutive_bad_steps=2",
        "diagnostics.every=0",
    ]
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"], overrides=tiny)
    messages: list[str] = []
    options = ExecutionOptions(echo=messages.append, logs_dir=tmp_path / "logs")
    (result,) = execute_plan([spec], options)
    log = (tmp_path / "logs" / "fig8_implicit_seed0.log").read_text()
    assert result.status == "diverged", log
    assert result.trained and result.evaluated  # the last finite checkpoint is still evaluated
    status = json.loads((spec.run_dir / RUN_STATUS_FILE).read_text())
    assert status["train"] == "diverged" and 0 < status["checkpoint_step"] < 20
    assert any("diverged (NaN/Inf steps)" in message for message in messages)

    messages.clear()
    (again,) = execute_plan([spec], options)
    assert again.status == "diverged" and not again.trained and "complete, skipped" in messages[-1]
