"""Interrupted runs are reported as resumable; a stop signal to ``reproduce`` stops its subprocesses and
starts nothing new."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from implicit_slots.reproduce import runs
from implicit_slots.reproduce.experiments import EXPERIMENTS
from implicit_slots.reproduce.runs import ExecutionOptions, build_plan, execute_plan
from implicit_slots.training import INTERRUPTED_EXIT_CODE


def test_an_interrupted_training_is_reported_as_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def interrupted(command: list[str], log_path: Path | None, stop: object) -> tuple[int, str]:
        commands.append(command)
        return INTERRUPTED_EXIT_CODE, "interrupted at step 3 by SIGTERM"

    monkeypatch.setattr(runs, "_run_logged", interrupted)
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    messages: list[str] = []
    (result,) = execute_plan([spec], ExecutionOptions(echo=messages.append))
    assert result.status == "interrupted" and "SIGTERM" in result.message
    assert len(commands) == 1 and "train" in commands[0]  # no evaluation of an unfinished run
    assert "run again to resume" in messages[-1]


# Stands in for `python -m implicit_slots.cli train ...`: says it started, then waits for SIGTERM, on which
# it records the signal and exits as `train` does after its checkpoint (without one, it gives up after
# about 30 s, so a failing test leaves no process behind).
FAKE_TRAIN = f"""#!/bin/sh
echo "$*" >> "$FAKE_DIR/started"
trap 'echo TERM >> "$FAKE_DIR/terminated"; exit {INTERRUPTED_EXIT_CODE}' TERM
i=0
while [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
exit 1
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_running_subprocess_and_starts_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    plan = build_plan([EXPERIMENTS["fig8"]], "cpu", 3, tmp_path / "runs", only=["fig8_implicit"])
    for spec in plan:
        spec.config.data.cache_dir = None  # nothing to render for a fake run

    def signal_once_started() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signum)  # as `kill` (SIGTERM) or Ctrl-C (SIGINT) would

    sender = threading.Thread(target=signal_once_started)
    sender.start()
    messages: list[str] = []
    previous = signal.getsignal(signum)
    results = execute_plan(plan, ExecutionOptions(python=str(fake), jobs=1, echo=messages.append))
    sender.join()
    assert signal.getsignal(signum) == previous  # the handler is gone once the plan returns
    started = (tmp_path / "started").read_text().splitlines()
    assert len(started) == 1 and "train" in started[0]  # the queued runs never started
    assert (tmp_path / "terminated").read_text().split() == ["TERM"]  # the running one got SIGTERM
    assert [r.status for r in results] == ["interrupted"] * 3
    assert [r.message == runs.NOT_STARTED for r in results] == [False, True, True]
    assert f"stopped by {signal.Signals(signum).name}" in messages[-1]
    assert "2 not started" in messages[-1]


def test_the_command_exits_4_and_writes_no_report_when_a_run_was_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from implicit_slots.cli import main

    def interrupted(command: list[str], log_path: Path | None, stop: object) -> tuple[int, str]:
        return INTERRUPTED_EXIT_CODE, "interrupted at step 3 by SIGTERM"

    monkeypatch.setattr(runs, "_run_logged", interrupted)
    out = tmp_path / "report"
    args = ["reproduce", "fig8", "--only", "fig8_implicit", "--seeds", "1"]
    assert main([*args, "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == INTERRUPTED_EXIT_CODE
    assert not out.exists()
    assert "run the same command again to resume" in capsys.readouterr().out
