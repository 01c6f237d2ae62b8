"""Runs in subprocesses: SIGKILL + resume equals an uninterrupted run; SIGTERM / SIGUSR1 checkpoint the step
and resume bit-identically; a second writer is refused; 2-rank DDP (identical parameters, one stop step)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_training_setup import tiny_dataset_factory, write_config

from implicit_slots.config import load_config
from implicit_slots.experiment.checkpoint import load_checkpoint
from implicit_slots.training import INTERRUPTED_EXIT_CODE, TrainingSetupError, train
from implicit_slots.training.logger import read_metrics

DRIVER = str(Path(__file__).resolve().parent / "train_driver.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, DRIVER, "cli", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.exists() else []
    return records[-1]["step"] if records else 0


def _checkpoint_step(run_dir: Path) -> int:
    path = run_dir / "checkpoints" / "last.pt"
    return load_checkpoint(path)["step"] if path.exists() else 0


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "c.yaml", training={"max_steps": 16, "checkpoint_every": 4})
    reference = train(load_config(config_path), tmp_path / "reference", dataset_factory=tiny_dataset_factory)

    run_dir = tmp_path / "killed"
    with _start("train", str(config_path), "--run-dir", str(run_dir), "model.delay_s=0.1") as process:
        # Kill hard once a checkpoint exists AND the run has logged steps after it (which resume must drop).
        _wait_for(lambda: 0 < _checkpoint_step(run_dir) < _last_step(run_dir), process)
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = _checkpoint_step(run_dir)
    assert 0 < killed_at < 16

    # Resume in this process: the checkpoint crosses a process boundary, as after a real crash.
    resumed = train(
        load_config(run_dir / "config.yaml", ["model.delay_s=0"]),
        run_dir,
        resume=True,
        dataset_factory=tiny_dataset_factory,
    )
    assert resumed.status == "completed" and resumed.step == 16
    expected = read_metrics(tmp_path / "reference" / "metrics.jsonl")
    got = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 17))
    after = [(r["step"], r["loss"], r["mse"], r["grad_norm"]) for r in got if r["step"] > killed_at]
    assert after == [
        (r["step"], r["loss"], r["mse"], r["grad_norm"]) for r in expected if r["step"] > killed_at
    ]
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, final[key]), key


@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_parameters(tmp_path: Path) -> None:
    config_path = write_config(
        tmp_path / "c.yaml",
        model={"variant": "IB"},  # IFT: its backward statistics are filled in during backward()
        training={"max_steps": 3, "batch_size": 4, "checkpoint_every": 2},
        diagnostics={"every": 1, "jacobian": False},
    )
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, DRIVER, "ddp", str(config_path), str(run_dir)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, rank0["state"][key]), key
    # Rank 0 alone logs; both ranks' RNG states are saved and differ (per-rank slot-initialisation noise).
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["diag/forward_solver_steps"] == 2 and r["diag/backward_solver_steps"] >= 1 for r in records)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])
    # Each rank read its own half of every global batch of 4 (per-rank batch 2, 16 samples -> 4 steps per
    # epoch); the position is stored globally: 3 steps x 4 samples.
    assert checkpoint["data"] == {"epoch": 0, "position": 12}
    # Resuming the 2-process run in one process continues the global order: the 4th batch ends epoch 0.
    config = load_config(run_dir / "config.yaml", ["training.max_steps=4"])
    resumed = train(config, run_dir, resume=True, dataset_factory=tiny_dataset_factory)
    assert resumed.step == 4
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["data"] == {"epoch": 1, "position": 0}


def _interrupt_and_resume(tmp_path: Path, signum: int) -> None:
    config_path = write_config(tmp_path / "c.yaml", training={"max_steps": 12, "checkpoint_every": 0})
    reference = train(load_config(config_path), tmp_path / "reference", dataset_factory=tiny_dataset_factory)

    run_dir = tmp_path / "preempted"
    with _start("train", str(config_path), "--run-dir", str(run_dir), "model.delay_s=0.1") as process:
        _wait_for(lambda: _last_step(run_dir) >= 2, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == INTERRUPTED_EXIT_CODE, stderr
    stopped_at = _checkpoint_step(run_dir)  # checkpoint_every=0: only the signal wrote one
    assert 2 <= stopped_at < 12 and _last_step(run_dir) == stopped_at  # the step in progress finished
    name = signal.Signals(signum).name
    assert f"interrupted at step {stopped_at} by {name}: checkpoint written to" in stderr
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))

    resumed = train(
        load_config(run_dir / "config.yaml", ["model.delay_s=0"]),
        run_dir,
        resume=True,
        dataset_factory=tiny_dataset_factory,
    )
    assert resumed.status == "completed" and resumed.step == 12
    assert read_metrics(run_dir / "metrics.jsonl") == read_metrics(tmp_path / "reference" / "metrics.jsonl")
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_stop_signal_checkpoints_the_step_and_resume_is_bit_identical(tmp_path: Path, signum: int) -> None:
    _interrupt_and_resume(tmp_path, signum)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_one_does_not_block(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "c.yaml", training={"max_steps": 400, "checkpoint_every": 2})
    run_dir = tmp_path / "busy"
    with _start("train", str(config_path), "--run-dir", str(run_dir), "model.delay_s=0.05") as process:
        _wait_for(lambda: _checkpoint_step(run_dir) >= 2, process)
        host = socket.gethostname()
        busy = rf"is being trained by process {process.pid} on host {re.escape(host)}"
        config = load_config(run_dir / "config.yaml", ["model.delay_s=0"])
        with pytest.raises(TrainingSetupError, match=busy):
            train(config, run_dir, resume=True, dataset_factory=tiny_dataset_factory)
        with pytest.raises(TrainingSetupError, match=busy):
            train(config, run_dir, dataset_factory=tiny_dataset_factory)
        # The same refusal from the command line: exit 2 and one message naming the process.
        second = subprocess.run(
            [sys.executable, DRIVER, "cli", "train", "--resume", str(run_dir)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and re.search(busy, second.stderr), second.stderr
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The dead holder's lock file (with its pid) is left behind; the kernel released the lock itself.
    assert f"process {process.pid} " in (run_dir / "train.lock").read_text()
    resumed = train(
        load_config(run_dir / "config.yaml", ["training.max_steps=8", "model.delay_s=0"]),
        run_dir,
        resume=True,
        dataset_factory=tiny_dataset_factory,
    )
    assert resumed.status == "completed"
    assert f"process {os.getpid()} " in (run_dir / "train.lock").read_text()


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step_when_one_rank_is_signalled(tmp_path: Path) -> None:
    config_path = write_config(
        tmp_path / "c.yaml",
        model={"delay_s": 0.1},
        training={"max_steps": 200, "batch_size": 4, "checkpoint_every": 0},
    )
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    with subprocess.Popen(
        [*command, DRIVER, "ddp", str(config_path), str(run_dir)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _wait_for(lambda: _last_step(run_dir) >= 2, process, timeout=180)
        rank1 = int((tmp_path / "ddp-rank1.pid").read_text())
        os.kill(rank1, signal.SIGUSR1)  # only rank 1 is told to stop
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr[-3000:]
    rank0, rank1_result = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["status"] == rank1_result["status"] == "interrupted"
    assert rank0["step"] == rank1_result["step"] == _checkpoint_step(run_dir) < 200
    assert "by a signal on another rank: checkpoint written" in stderr  # rank 0 logs, rank 1 was signalled
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1_result["state"][key]), key


@pytest.mark.slow
def test_ddp_ranks_end_together_when_rank0_cannot_write_a_checkpoint(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "c.yaml", training={"max_steps": 6, "checkpoint_every": 2})
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, DRIVER, "ddp", str(config_path), str(run_dir)],
        env={**ENV, "TEST_FAIL_CHECKPOINT_WRITES_AFTER": "1"},  # step 2 is written, step 4 fails
        capture_output=True,
        text=True,
        timeout=180,  # a rank left waiting in a collective would hang until this fires
    )
    assert result.returncode != 0
    assert (
        "No space left on device" in result.stderr and "previous checkpoint there is intact" in result.stderr
    )
    assert "rank 0 could not write the checkpoint" in result.stderr  # rank 1 ends too, with its own line
    assert _checkpoint_step(run_dir) == 2
    assert not (run_dir / "rank0.pt").exists() and not (run_dir / "rank1.pt").exists()
