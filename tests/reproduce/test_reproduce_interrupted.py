"""A training subprocess that stopped on a signal (exit INTERRUPTED_EXIT_CODE) is reported as resumable."""

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

    def interrupted(command: list[str], log_path: Path | None) -> tuple[int, str]:
        commands.append(command)
        return INTERRUPTED_EXIT_CODE, "interrupted at step 3 by SIGTERM"

    monkeypatch.setattr(runs, "_run_logged", interrupted)
    (spec,) = build_plan([EXPERIMENTS["fig8"]], "cpu", 1, tmp_path, only=["fig8_implicit"])
    messages: list[str] = []
    (result,) = execute_plan([spec], ExecutionOptions(echo=messages.append))
    assert result.status == "interrupted" and "SIGTERM" in result.message
    assert len(commands) == 1 and "train" in commands[0]  # no evaluation of an unfinished run
    assert "run again to resume" in messages[-1]
