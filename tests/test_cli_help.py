"""Every command's ``--help`` works and reads as plain text (no reStructuredText markup from docstrings)."""

from __future__ import annotations

import pytest

from implicit_slots.cli import COMMANDS, help_text, main


def test_help_text_strips_markup() -> None:
    doc = "Run ``train`` (see :func:`~implicit_slots.training.loop.train`).\n\nMore."
    assert help_text(doc) == "Run train (see implicit_slots.training.loop.train).\n\nMore."
    assert help_text(doc, first_paragraph=True) == "Run train (see implicit_slots.training.loop.train)."
    assert help_text(None) is None


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_is_plain_text(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"] if command is None else [command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: implicit-slots")
    assert "``" not in out and ":func:" not in out
