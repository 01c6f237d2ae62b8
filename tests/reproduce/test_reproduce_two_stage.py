"""`reproduce` with two-stage SLATE: one dVAE stage per (dataset, resolution, seed), shared by every arm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from implicit_slots.cli import main
from implicit_slots.reproduce.experiments import EXPERIMENTS, DvaeStage
from implicit_slots.reproduce.report import report_name, write_reports
from implicit_slots.reproduce.runs import (
    TWO_STAGE_DIR,
    ExecutionOptions,
    ReproduceError,
    build_plan,
    dvae_stage_config,
    execute_plan,
)

SLATE_EXPERIMENTS = ("fig3a", "fig3b", "table3", "fig5", "fig6")


def test_slate_experiments_are_two_stage_at_cpu_and_joint_at_paper_scale() -> None:
    for name in SLATE_EXPERIMENTS:
        assert "cpu" in EXPERIMENTS[name].dvae_stage and "paper" not in EXPERIMENTS[name].dvae_stage
    for name in ("fig7", "fig8"):
        assert not EXPERIMENTS[name].dvae_stage


def test_plan_trains_one_dvae_stage_per_dataset_resolution_and_seed(tmp_path: Path) -> None:
    experiments = [EXPERIMENTS[name] for name in (*SLATE_EXPERIMENTS, "fig7")]
    plan = build_plan(experiments, "cpu", 2, tmp_path)
    stages = [spec for spec in plan if spec.kind == "dvae-stage"]
    arms = [spec for spec in plan if spec.kind == "run" and spec.config.model.name == "slate"]
    keys = [(s.config.data.name, s.config.data.image_size, s.seed) for s in stages]
    assert len(keys) == len(set(keys))  # once per (dataset, resolution, seed)
    assert {(s.config.data.name, s.seed) for s in stages} >= {
        ("clevr-mirror-lite", 0),
        ("clevr-mirror-lite", 1),
    }
    for stage in stages:
        assert stage.config.model.name == "dvae" and stage.config.diagnostics.every == 0
        assert stage.run_dir.parent.parent == tmp_path / TWO_STAGE_DIR
    position = {spec.run_dir: index for index, spec in enumerate(plan)}
    for arm in arms:
        assert arm.dvae_stage is not None and position[arm.dvae_stage] < position[arm.run_dir]
        stage = next(s for s in stages if s.run_dir == arm.dvae_stage)
        # The arm reads its own seed's stage on its own data and size.
        assert stage.seed == arm.seed and stage.config.data == arm.config.data
        assert arm.config.model.config.dvae_init == str(arm.dvae_stage)
        assert arm.config.model.config.freeze_dvae is True
        assert f"model.dvae_init={arm.dvae_stage}" in arm.overrides
        assert arm.run_dir == tmp_path / TWO_STAGE_DIR / arm.config_name / f"seed{arm.seed}"
    # Every CLEVR-Mirror arm of seed 0 (Fig. 3a/3b, Table 3, Fig. 5, 6: clipping, warm-up, decay and
    # iterations vary) starts from the same stage.
    mirror = {arm.dvae_stage for arm in arms if arm.seed == 0 and arm.config.data.name == "clevr-mirror-lite"}
    assert len(mirror) == 1 and len([a for a in arms if a.dvae_stage in mirror]) > 10
    # Set prediction is not SLATE: untouched.
    fig7 = [spec for spec in plan if spec.config_name.startswith("fig7")]
    assert fig7 and all(spec.dvae_stage is None and spec.run_dir.parent.parent == tmp_path for spec in fig7)


def test_dvae_mode_forces_joint_or_two_stage(tmp_path: Path) -> None:
    joint = build_plan([EXPERIMENTS["table3"]], "cpu", 1, tmp_path, dvae="joint")
    assert all(spec.kind == "run" and spec.dvae_stage is None for spec in joint)
    assert all(spec.config.model.config.dvae_init is None for spec in joint)
    paper = build_plan([EXPERIMENTS["table3"]], "paper", 1, tmp_path, only=["table3_clevr*"])
    assert all(spec.kind == "run" for spec in paper)  # joint by default at paper scale
    forced = build_plan(
        [EXPERIMENTS["table3"]], "paper", 1, tmp_path, only=["table3_clevr*"], dvae="two-stage"
    )
    assert [spec.kind for spec in forced] == ["dvae-stage", "run", "run"]
    with pytest.raises(ReproduceError, match="unknown --dvae mode"):
        build_plan([EXPERIMENTS["table3"]], "cpu", 1, tmp_path, dvae="both")


def test_stage_recipe_is_slates_dvae_recipe_and_ignores_what_arms_vary(tmp_path: Path) -> None:
    plan = build_plan([EXPERIMENTS["fig5"]], "cpu", 1, tmp_path, dvae="joint")
    configs = {spec.config_name: spec.config for spec in plan}
    clipped, unclipped = configs["table3_clevr_mirror_implicit"], configs["fig5_vanilla_no_clip"]
    assert clipped.training.grad_clip != unclipped.training.grad_clip
    stage = dvae_stage_config(clipped, DvaeStage(max_steps=123))
    assert stage == dvae_stage_config(unclipped, DvaeStage(max_steps=123))
    slate = clipped.model.config
    assert (
        stage.model.config.image_size == slate.image_size
        and stage.model.config.vocab_size == slate.vocab_size
    )
    assert stage.training.max_steps == 123 and stage.training.lr_decay.kind is None
    assert stage.training.optimizer.lr == clipped.training.optimizer.groups["dvae"].lr
    assert stage.training.hyperparameter_schedules == clipped.training.hyperparameter_schedules
    assert dvae_stage_config(clipped, DvaeStage()).training.max_steps == clipped.training.max_steps


def test_dry_run_shows_the_stage_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["reproduce", "table3", "--only", "table3_clevr*", "--seeds", "2", "--dry-run"]
    assert main([*args, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    stage_lines = [line for line in out.splitlines() if "stage.yaml" in line and "train" in line]
    assert len(stage_lines) == 2  # seeds 0 and 1, shared by the implicit and the vanilla arm
    assert out.count("model.dvae_init=") == 4 and "model.freeze_dvae=true" in out
    assert not (tmp_path / TWO_STAGE_DIR).exists()  # a dry run writes nothing


def test_report_names_and_says_which_dvae_training(tmp_path: Path) -> None:
    table3 = EXPERIMENTS["table3"]
    two_stage = build_plan([table3], "cpu", 1, tmp_path, only=["table3_clevr*"])
    joint = build_plan([table3], "cpu", 1, tmp_path, only=["table3_clevr*"], dvae="joint")
    assert report_name(table3, "cpu", "auto", two_stage) == "table3"
    assert report_name(table3, "cpu", "joint", joint) == "table3_joint"
    assert report_name(EXPERIMENTS["fig7"], "cpu", "two-stage", []) == "fig7"
    paths = write_reports([table3], "cpu", 1, tmp_path, tmp_path / "out", plan=two_stage)
    text = (tmp_path / "out" / "table3.md").read_text()
    assert "**two-stage**" in text and "dvae_clevr-mirror-lite_64px" in text and "mse_background" in text
    joint_paths = write_reports([table3], "cpu", 1, tmp_path, tmp_path / "out", plan=joint, dvae="joint")
    assert "**joint**" in (tmp_path / "out" / "table3_joint.md").read_text()
    assert [p.name for p in paths] == ["table3.png", "table3.md", "verdicts.png", "verdicts.md"]
    assert [p.name for p in joint_paths] == [
        "table3_joint.png",
        "table3_joint.md",
        "verdicts_joint.png",
        "verdicts_joint.md",
    ]


TINY = [
    "data.num_samples.train=16",
    "data.num_samples.val=4",
    "data.num_samples.test=4",
    "training.batch_size=4",
    "training.max_steps=2",
    "training.checkpoint_every=1",
    "diagnostics.every=0",
]


@pytest.mark.slow
def test_stage_then_arm_train_skip_and_share_the_dvae(tmp_path: Path) -> None:
    overrides = [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]
    plan = build_plan(
        [EXPERIMENTS["table3"]],
        "cpu",
        1,
        tmp_path,
        only=["table3_clevr_mirror_implicit"],
        overrides=overrides,
    )
    stage, arm = plan
    assert stage.kind == "dvae-stage" and arm.dvae_stage == stage.run_dir
    messages: list[str] = []
    options = ExecutionOptions(echo=messages.append, logs_dir=tmp_path / "logs")
    results = execute_plan(plan, options)
    assert [r.status for r in results] == ["complete", "complete"], [r.message for r in results]
    metrics = json.loads((stage.run_dir / "eval" / "metrics.json").read_text())["metrics"]
    assert {"mse_dvae", "mse_background"} <= set(metrics)
    stage_weights = torch.load(stage.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    arm_weights = torch.load(arm.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in stage_weights.items():
        torch.testing.assert_close(arm_weights[key], value, rtol=0, atol=0)  # frozen through training
    messages.clear()
    again = execute_plan(plan, options)
    assert not any(r.trained or r.evaluated for r in again)
    assert sum("complete, skipped" in m for m in messages) == 2


def test_a_failed_stage_stops_its_arms(tmp_path: Path) -> None:
    plan = build_plan([EXPERIMENTS["table3"]], "cpu", 1, tmp_path, only=["table3_clevr*"], overrides=TINY)
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'no training here' >&2\nexit 1\n")
    failing.chmod(0o755)
    options = ExecutionOptions(python=str(failing), echo=lambda _: None)
    # Data preparation would render scenes: the plan's cache is off for this test.
    for spec in plan:
        spec.config.data.cache_dir = None
    results = execute_plan(plan, options)
    assert [r.status for r in results] == ["train-failed", "stage-failed", "stage-failed"]
    assert "dVAE stage" in results[1].message
