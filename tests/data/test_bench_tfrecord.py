"""``implicit-slots bench tfrecord`` on a tiny synthetic file: one table row per step."""

from __future__ import annotations

import pytest

from implicit_slots.cli import main


@pytest.mark.parametrize("layout", ["tetrominoes", "clevr-with-masks"])
def test_bench_tfrecord_prints_one_row_per_step(layout: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "tfrecord", "--format", layout, "--records", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{layout}: 2 records")
    assert [line.split("|")[1].strip() for line in lines[3:]] == [
        "conversion",
        "read records",
        "CRC-32C alone",
    ]
