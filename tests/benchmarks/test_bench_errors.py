"""A benchmark's input errors reach the user as one command-line error (exit 2), not a traceback."""

from pathlib import Path

import pytest

from implicit_slots.cli import main


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train-step", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"implicit-slots bench: error: config file {str(tmp_path / 'missing.yaml')!r} does not exist"
    ]
