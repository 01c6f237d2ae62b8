"""``implicit-slots train`` / ``evaluate`` in-process: the run folder, the interface, errors, evaluation."""

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml
from tiny_training_setup import MODEL_NAME, tiny_dataset_factory, write_config
from torch.utils.data import Dataset

from implicit_slots import evaluation
from implicit_slots.cli import main
from implicit_slots.config import DataConfig
from implicit_slots.data import ImageReadError
from implicit_slots.evaluation import EvaluationOptions, EvaluationReport
from implicit_slots.experiment import datasets as data_module
from implicit_slots.experiment.checkpoint import load_checkpoint
from implicit_slots.training import INTERRUPTED_EXIT_CODE
from implicit_slots.training.logger import read_metrics


@pytest.fixture(autouse=True)
def _tiny_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "build_dataset_split", tiny_dataset_factory)


def test_train_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "exp.yaml")
    run_dir = tmp_path / "run"
    # The exact interface: config, --run-dir, then overrides of the five keys every model has.
    code = main(
        [
            "train",
            str(config),
            "--run-dir",
            str(run_dir),
            "training.max_steps=4",
            "training.batch_size=2",
            "training.seed=3",
            "training.checkpoint_every=2",
            "training.log_every=2",
        ]
    )
    assert code == 0
    assert "completed at step 4" in capsys.readouterr().out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["max_steps"] == 4 and saved["training"]["seed"] == 3
    assert saved["provenance"]["package_version"] == "0.1.0"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [2, 4]
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 4
    assert list(run_dir.glob("events.out.tfevents.*"))

    # --resume with an override extends the run.
    assert main(["train", "--resume", str(run_dir), "training.max_steps=6"]) == 0
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [2, 4, 6]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["max_steps"] == 6


def test_default_run_dir_is_named_after_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "fig5_vanilla.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config), "training.max_steps=1"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("fig5_vanilla-") and (run_dir / "checkpoints/last.pt").is_file()


def test_user_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "exp.yaml")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "training.max_stepz=1"]) == 2
    assert "key 'training.max_stepz'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "training.max_steps=1"]) == 0
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_one_line_for_resume_evaluate_and_main_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "exp.yaml")
    run_dir = tmp_path / "r"
    assert main(["train", str(config), "--run-dir", str(run_dir), "training.max_steps=1"]) == 0
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"damaged")
    capsys.readouterr()
    for argv in (
        ["train", "--resume", str(run_dir)],
        ["evaluate", str(run_dir)],
        ["main-job", "--config", str(config), "--run-dir", str(run_dir)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a readable checkpoint" in err, (argv, err)
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == b"damaged"  # nothing overwritten


def test_resuming_with_a_damaged_metrics_line_is_one_line_and_keeps_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "exp.yaml")
    run_dir = tmp_path / "r"
    overrides = ["training.max_steps=2", "training.log_every=1", "training.checkpoint_every=2"]
    assert main(["train", str(config), "--run-dir", str(run_dir), *overrides]) == 0
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    damaged = "\n".join(["{broken", *lines[1:]]) + "\n"
    metrics.write_text(damaged)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "training.max_steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 1 of 2 is not a JSON record" in err, err
    assert metrics.read_text() == damaged
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2


class _UnreadableAfter(Dataset):
    """Tiny images whose reads fail, as a folder dataset's do on a damaged file, after ``good`` reads."""

    def __init__(self, data: DataConfig, split: str, good: int) -> None:
        self.images, self.good, self.reads = tiny_dataset_factory(data, split), good, 0

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.reads += 1
        if self.reads > self.good:
            raise ImageReadError(f"/data/images/{index}.png: cannot read image (image file is truncated)")
        return self.images[index]


def test_an_unreadable_image_during_training_is_one_message_and_the_checkpoint_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        data_module, "build_dataset_split", lambda data, split: _UnreadableAfter(data, split, 8)
    )
    config = write_config(tmp_path / "exp.yaml")
    run_dir = tmp_path / "r"
    overrides = ["training.max_steps=6", "training.batch_size=2", "training.checkpoint_every=2"]
    assert main(["train", str(config), "--run-dir", str(run_dir), *overrides]) == 1  # 4 steps read
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress lines
    assert "Traceback" not in err and last.startswith("implicit-slots train: error: reading the data:"), err
    assert "/data/images/" in last and "cannot read image" in last and "--resume" in last
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 4


def test_nan_stop_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "exp.yaml", model={"name": MODEL_NAME, "poison_loss_calls": [1, 2]})
    overrides = ["training.max_consecutive_bad_steps=2", "training.max_steps=5"]
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), *overrides]) == 3
    assert "2 consecutive steps had a NaN/Inf loss or gradient" in capsys.readouterr().err


def test_main_job_divergence_is_one_message_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "exp.yaml", model={"name": MODEL_NAME, "poison_loss_calls": [1, 2]})
    overrides = ["training.max_consecutive_bad_steps=2", "training.max_steps=5"]
    assert main(["main-job", "--config", str(config), "--run-dir", str(tmp_path / "r"), *overrides]) == 3
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("implicit-slots main-job: error:") and "NaN/Inf" in last
    assert "Traceback" not in err


def _mean_image_evaluator(model, dataset, options: EvaluationOptions) -> EvaluationReport:
    count = min(len(dataset), options.max_images or len(dataset))
    images = torch.stack([dataset[i]["image"] for i in range(count)])
    with torch.no_grad():
        output = model({"image": images})
    mse = float(((output.reconstruction - images) ** 2).mean())
    figure = options.out_dir / "figure.txt"
    figure.write_text(options.split)
    return EvaluationReport(metrics={"mse": mse, "num_images": float(count)}, figures=[figure])


def test_evaluate_writes_metrics_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(evaluation._EVALUATORS, MODEL_NAME, _mean_image_evaluator)
    run_dir = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "e.yaml")), "--run-dir", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir), "--split", "val", "--max-images", "5", "--batch-size", "2"]) == 0
    assert "| mse |" in capsys.readouterr().out
    written = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert written["split"] == "val" and written["checkpoint_step"] == 6 and written["model"] == MODEL_NAME
    assert written["metrics"]["num_images"] == 5 and 0 < written["metrics"]["mse"] < 1
    assert written["figures"] == ["eval/figure.txt"] and written["options"]["batch_size"] == 2
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_sigterm_writes_a_final_checkpoint_and_exits_with_the_interrupted_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny model sends SIGTERM to this process during training forward 3; the handler only sets a
    # flag, the step finishes, a checkpoint is written and the command returns INTERRUPTED_EXIT_CODE.
    config = write_config(tmp_path / "exp.yaml", model={"name": MODEL_NAME, "signal_on_call": 3})
    run_dir = tmp_path / "r"
    overrides = ["training.max_steps=50", "training.checkpoint_every=0"]
    assert main(["train", str(config), "--run-dir", str(run_dir), *overrides]) == INTERRUPTED_EXIT_CODE == 4
    assert "interrupted at step 3 by SIGTERM: checkpoint written" in capsys.readouterr().err
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 3  # written by the signal only
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was restored
    assert main(["train", "--resume", str(run_dir), "training.max_steps=5", "model.signal_on_call=0"]) == 0
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]
