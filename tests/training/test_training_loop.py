"""The training loop in-process: learning, resume, NaN handling, schedules, diagnostics, setup errors."""

import math
from pathlib import Path

import pytest
import torch
from tiny_training_setup import tiny_dataset_factory, write_config

from implicit_slots.config import ExperimentConfig, apply_overrides, load_config
from implicit_slots.evaluation.runner import EvaluationRunError, load_trained_model
from implicit_slots.experiment import ExperimentSetupError, build_model
from implicit_slots.experiment.checkpoint import load_checkpoint, save_checkpoint_atomic
from implicit_slots.training import TrainingDivergedError, TrainingSetupError, train
from implicit_slots.training.logger import read_metrics
from implicit_slots.training.schedules import scheduled_value


def _config(tmp_path: Path, *overrides: str, **sections: object) -> ExperimentConfig:
    return load_config(write_config(tmp_path / "config.yaml", **sections), list(overrides))


def _run(config: ExperimentConfig, run_dir: Path, resume: bool = False):
    return train(config, run_dir, resume=resume, dataset_factory=tiny_dataset_factory)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    # 4 samples and batch 4: every step sees the same batch.
    config = _config(
        tmp_path, "data.num_samples.train=4", "training.max_steps=25", "training.optimizer.lr=1e-2"
    )
    batch = {"image": tiny_dataset_factory(config.data, "train").images}  # (4, 3, 8, 8)

    def loss_of(model: torch.nn.Module) -> float:
        torch.manual_seed(123)  # same slot initialisation for both models
        with torch.no_grad():
            return float(model.compute_loss(model(batch), batch).loss)

    torch.manual_seed(config.training.seed)
    initial = build_model(config).eval()
    result = _run(config, tmp_path / "run")
    assert loss_of(result.model) < 0.7 * loss_of(initial)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 25 and losses[-1] < losses[0]


def test_resume_in_process_is_bit_identical(tmp_path: Path) -> None:
    config = _config(tmp_path, "training.max_steps=6", "training.checkpoint_every=3")
    full = _run(config, tmp_path / "full")
    _run(apply_overrides(config, {"training.max_steps": 3}), tmp_path / "split")
    resumed = _run(config, tmp_path / "split", resume=True)
    assert read_metrics(tmp_path / "full" / "metrics.jsonl") == read_metrics(
        tmp_path / "split" / "metrics.jsonl"
    )
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    a, b = (
        load_checkpoint(tmp_path / "full/checkpoints/last.pt"),
        load_checkpoint(tmp_path / "split/checkpoints/last.pt"),
    )
    assert a["data"] == b["data"] == {"epoch": 1, "position": 8}  # 16 samples / batch 4: 4 steps per epoch
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


def test_non_finite_steps_are_skipped_counted_and_logged(tmp_path: Path) -> None:
    config = _config(
        tmp_path, "model.poison_loss_calls=[2]", "model.poison_grad_calls=[4]", "training.max_steps=5"
    )
    result = _run(config, tmp_path / "run")
    assert result.status == "completed" and result.skipped_steps == 2
    records = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert records[2]["loss"] is None  # NaN is written as null (strict JSON)
    assert math.isfinite(records[4]["loss"]) and records[4]["grad_norm"] is None
    assert [records[s]["skipped_steps"] for s in range(1, 6)] == [0, 1, 1, 2, 2]
    checkpoint = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert checkpoint["bad_steps"] == {"consecutive": 0, "total": 2}
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_skipped_step_leaves_parameters_and_optimizer_untouched(tmp_path: Path) -> None:
    base = _config(tmp_path, "training.max_steps=1")
    clean = _run(base, tmp_path / "clean")
    poisoned = _run(apply_overrides(base, {"model.poison_loss_calls": [1]}), tmp_path / "poisoned")
    torch.manual_seed(base.training.seed)
    initial = build_model(base)
    for key, value in poisoned.model.state_dict().items():
        assert torch.equal(value, initial.state_dict()[key]), key
    assert any(not torch.equal(v, initial.state_dict()[k]) for k, v in clean.model.state_dict().items())
    assert load_checkpoint(tmp_path / "poisoned/checkpoints/last.pt")["optimizer"]["state"] == {}


def test_consecutive_bad_steps_stop_with_a_clear_message(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "model.poison_loss_calls=[2,3,4]",
        "training.max_consecutive_bad_steps=3",
        "training.max_steps=9",
    )
    with pytest.raises(TrainingDivergedError, match=r"stopping at step 4: 3 consecutive steps had a NaN/Inf"):
        _run(config, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert checkpoint["step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_schedules_reach_the_optimizer_and_the_model(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "training.max_steps=5",
        "training.optimizer.lr=1e-3",
        "training.optimizer.warmup_steps=4",
        "training.optimizer.groups.encoder.lr=2e-3",
        "training.optimizer.groups.encoder.warmup_steps=0",
        "training.lr_decay.kind=exponential",
        "training.lr_decay.half_life=2",
        "training.hyperparameter_schedules.temperature.kind=cosine",
        "training.hyperparameter_schedules.temperature.start=1.0",
        "training.hyperparameter_schedules.temperature.end=0.1",
        "training.hyperparameter_schedules.temperature.steps=4",
    )
    result = _run(config, tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    for record in records:
        t = record["step"] - 1  # the record of step s describes update t = s - 1
        assert record["lr/main"] == pytest.approx(1e-3 * min(1, (t + 1) / 4) * 0.5 ** (t / 2))
        assert record["lr/encoder"] == pytest.approx(2e-3 * 0.5 ** (t / 2))
        assert record["hyper/temperature"] == pytest.approx(scheduled_value("cosine", 1.0, 0.1, 4, 0, t))
    assert result.model.temperature == pytest.approx(0.1)


def test_plateau_decay_halves_on_validation_plateaus(tmp_path: Path) -> None:
    # min_delta huge: only the first validation counts as an improvement, every later one is a plateau.
    config = _config(
        tmp_path,
        "training.max_steps=6",
        "training.validation.every=2",
        "training.lr_decay.kind=plateau",
        "training.lr_decay.patience=1",
        "training.lr_decay.min_delta=1e9",
    )
    _run(config, tmp_path / "run")
    records = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert [records[s]["lr_decay_factor"] for s in (2, 4, 6)] == [1.0, 0.5, 0.25]
    assert [records[s]["lr/main"] for s in (2, 3, 5)] == pytest.approx([3e-3, 3e-3, 1.5e-3])
    assert all(math.isfinite(records[s]["val/loss"]) and "val/mse" in records[s] for s in (2, 4, 6))
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["plateau"]["decay"] == 0.25


def test_diagnostics_are_logged(tmp_path: Path) -> None:
    config = _config(tmp_path, "training.max_steps=2", "diagnostics.every=2", "diagnostics.images_every=2")
    _run(config, tmp_path / "run")
    record = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    for key in (
        "diag/residual_mean",
        "diag/residual_max",
        "diag/jacobian_norm_mean",
        "diag/jacobian_norm_max",
        "diag/forward_solver_steps",
        "grad_norm/encoder",
        "grad_norm/main",
        "grad_norm/total",
        "lr/main",
    ):
        assert math.isfinite(record[key]), key
    assert record["diag/residual_max"] >= record["diag/residual_mean"] > 0
    assert record["grad_norm/total"] == pytest.approx(record["grad_norm"], rel=1e-5)


def test_diagnostics_do_not_change_the_trajectory(tmp_path: Path) -> None:
    plain = _run(_config(tmp_path, "training.max_steps=3"), tmp_path / "plain")
    watched = _run(_config(tmp_path, "training.max_steps=3", "diagnostics.every=1"), tmp_path / "watched")
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, watched.model.state_dict()[key]), key


def test_setup_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(
        TrainingSetupError, match=r"'training.optimizer.groups.dvae': .* no parameter group 'dvae'"
    ):
        _run(_config(tmp_path, "training.optimizer.groups.dvae.lr=1e-4"), tmp_path / "a")
    with pytest.raises(
        TrainingSetupError, match=r"'training.hyperparameter_schedules.tau': .* valid: \['temperature'\]"
    ):
        _run(_config(tmp_path, "training.hyperparameter_schedules.tau.start=1.0"), tmp_path / "b")
    with pytest.raises(TrainingSetupError, match=r"fewer than one batch of 32 per rank"):
        _run(_config(tmp_path, "training.batch_size=32"), tmp_path / "c")
    with pytest.raises(TrainingSetupError, match=r"data \(name 'nope'\): unknown dataset 'nope'"):
        _run(_config(tmp_path, "data.name=nope"), tmp_path / "d")
    assert not (tmp_path / "d").exists()  # a failed set-up leaves no folder behind (not even its lock)
    config = _config(tmp_path, "training.max_steps=1")
    _run(config, tmp_path / "e")
    with pytest.raises(TrainingSetupError, match=r"already holds a run .* --resume"):
        _run(config, tmp_path / "e")
    with pytest.raises(TrainingSetupError, match=r"cannot resume: no checkpoint"):
        _run(config, tmp_path / "f", resume=True)
    # A checkpoint written by code with another architecture: one named error, in train and evaluate.
    checkpoint = load_checkpoint(tmp_path / "e/checkpoints/last.pt")
    renamed = next(iter(checkpoint["model"]))
    checkpoint["model"]["old_" + renamed] = checkpoint["model"].pop(renamed)
    save_checkpoint_atomic(checkpoint, tmp_path / "e/checkpoints/last.pt")
    fits = rf"cannot resume: .*last.pt: the checkpoint does not fit .*: missing {renamed} \(1 in all\); "
    with pytest.raises(TrainingSetupError, match=fits + rf"unexpected old_{renamed} \(1 in all\)\."):
        _run(apply_overrides(config, {"training.max_steps": 2}), tmp_path / "e", resume=True)
    with pytest.raises(EvaluationRunError, match=rf"does not fit .*: missing {renamed} "):
        load_trained_model(tmp_path / "e")


def test_bf16_autocast_runs_and_tracks_fp32(tmp_path: Path) -> None:
    # CPU autocast exercises the same code path as CUDA bf16; losses agree to bf16 precision.
    fp32 = _run(_config(tmp_path, "training.max_steps=3"), tmp_path / "fp32")
    bf16 = _run(_config(tmp_path, "training.max_steps=3", "training.precision=bf16"), tmp_path / "bf16")
    a = [r["loss"] for r in read_metrics(tmp_path / "fp32" / "metrics.jsonl")]
    b = [r["loss"] for r in read_metrics(tmp_path / "bf16" / "metrics.jsonl")]
    assert a != b and b == pytest.approx(a, rel=2e-2)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32
    assert fp32.status == bf16.status == "completed"


@pytest.mark.parametrize(("norm", "expected"), [("l2", "l2"), ("inf", "inf"), ("none", None)])
def test_grad_clip_switch_reaches_the_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, norm: str, expected: str | None
) -> None:
    from implicit_slots.training import loop

    calls: list[tuple[str | None, float, float]] = []
    real = loop.clip_gradients

    def spy(params, kind, max_norm, l2_norm=None):  # records the bound and the norm after clipping
        before = real(params, kind, max_norm, l2_norm)
        after = loop.total_gradient_norm(params, kind or "l2")
        calls.append((kind, max_norm, float(after) if before is not None else math.nan))
        return before

    monkeypatch.setattr(loop, "clip_gradients", spy)
    config = _config(
        tmp_path,
        "training.max_steps=3",
        f"training.grad_clip.norm={norm}",
        "training.grad_clip.max_norm=1e-3",
    )
    _run(config, tmp_path / "run")
    assert [(kind, bound) for kind, bound, _ in calls] == [(expected, 1e-3)] * 3
    if expected is not None:  # the gradients the optimizer saw were clipped to the bound
        assert all(after == pytest.approx(1e-3, rel=1e-3) for _, _, after in calls)


def test_model_builder_errors_name_the_model(tmp_path: Path) -> None:
    from implicit_slots.config import load_config

    repo = Path(__file__).resolve().parents[2]
    config = load_config(repo / "configs" / "slate_clevr_lite.yaml", ["model.position_init=fourier"])
    with pytest.raises(ExperimentSetupError, match=r"model 'slate': position_init must be .* got 'fourier'"):
        build_model(config)
    # train() reports the same problem as its own setup error (the CLI prints it, exit 2).
    with pytest.raises(TrainingSetupError, match=r"model 'slate': position_init must be .* got 'fourier'"):
        train(config, tmp_path / "run")
