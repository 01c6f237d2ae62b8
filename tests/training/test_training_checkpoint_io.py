"""Checkpoint files: atomic writes, weights-only loading, RNG round trips, no NaN ever written, a full
disk keeps the previous checkpoint."""

import errno
import os
import random

import numpy as np
import pytest
import torch

from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointWriteError,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint_atomic,
)


def _state(value: float) -> dict:
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": 3,
        "model": {"w": torch.full((2,), value)},
        "optimizer": {
            "state": {0: {"exp_avg": torch.zeros(2), "step": torch.tensor(3.0)}},
            "param_groups": [],
        },
        "rng": [capture_rng_state(torch.device("cpu"))],
    }


def test_rng_state_round_trip_reproduces_every_source(tmp_path) -> None:
    path = save_checkpoint_atomic(_state(1.0), tmp_path / "c.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random(), np.random.rand(), torch.rand(())  # move every source on
    restore_rng_state(load_checkpoint(path)["rng"][0], torch.device("cpu"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_non_finite_state_is_never_written(tmp_path) -> None:
    path = save_checkpoint_atomic(_state(1.0), tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"NaN/Inf values in \['model.w'\]"):
        save_checkpoint_atomic(_state(float("nan")), path)
    assert load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0]  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_overwrite_is_a_rename_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint_atomic(_state(1.0), path)
    save_checkpoint_atomic(_state(2.0), path)
    assert load_checkpoint(path)["model"]["w"].tolist() == [2.0, 2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_missing_file_and_wrong_version_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format_version": 99}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="checkpoint format 99"):
        load_checkpoint(tmp_path / "old.pt")


def test_a_corrupt_or_truncated_file_is_one_value_error_naming_it(tmp_path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint\n")
    with pytest.raises(ValueError, match=r"garbage.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk\n")  # the weights-only unpickler raises KeyError on this
    with pytest.raises(ValueError, match=r"junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint_atomic(_state(1.0), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_a_state_that_does_not_fit_the_model_is_one_value_error_naming_the_keys() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    state = {key: torch.full_like(value, 7.0) for key, value in model.state_dict().items()}
    load_model_state(model, state, "ok.pt")  # a fitting state loads
    assert bool((model[1].weight == 7.0).all())
    state = {key: torch.full_like(value, 5.0) for key, value in model.state_dict().items()}
    state["0.weight"] = torch.zeros(2, 4)
    state.pop("1.bias")
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        load_model_state(model, state, "run/last.pt")
    assert str(error.value) == (
        "run/last.pt: the checkpoint does not fit the Sequential its config builds: "
        "missing 1.bias (1 in all); unexpected 2.weight (1 in all); "
        "other shape 0.weight (2, 4) (model: (2, 3)) (1 in all). "
        "It was probably written by another version of implicit-slots."
    )
    assert bool((model[1].weight == 7.0).all())  # nothing was loaded, not even the keys that fit


def _fill_the_disk_after(monkeypatch: pytest.MonkeyPatch, calls_that_succeed: int) -> None:
    """torch.save writes part of the file, then fails like a full disk (after some successful calls)."""
    real = torch.save
    calls = []

    def save(obj, handle, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) <= calls_that_succeed:
            return real(obj, handle, *args, **kwargs)
        handle.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint_atomic(_state(1.0), tmp_path / "c.pt")
    _fill_the_disk_after(monkeypatch, 0)
    with pytest.raises(
        CheckpointWriteError, match=r"c.pt.*No space left on device.*previous checkpoint .* intact"
    ):
        save_checkpoint_atomic(_state(2.0), path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # the partial temporary file is gone


def test_a_folder_given_as_the_checkpoint_path_is_named_as_one(tmp_path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(CheckpointWriteError, match=r"out.*that path is a folder; give a file name"):
        save_checkpoint_atomic(_state(1.0), folder)
    assert list(folder.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_full_disk_ends_the_run_with_one_message(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_training_setup import tiny_dataset_factory, write_config

    from implicit_slots.cli import main
    from implicit_slots.experiment import datasets as data_module
    from implicit_slots.training.logger import read_metrics

    monkeypatch.setattr(data_module, "build_dataset_split", tiny_dataset_factory)
    _fill_the_disk_after(monkeypatch, 1)  # the checkpoint of step 3 is written, that of step 6 is not
    config = write_config(tmp_path / "c.yaml", training={"max_steps": 9, "checkpoint_every": 3})
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "intact" in errors[0], errors
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 3
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.pt"]
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["step"] == 6  # the run ended at the failed write
