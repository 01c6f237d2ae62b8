"""The solver benchmark prints one row per (map, solver, budget, implementation) with finite residuals."""

import pytest

from implicit_slots.benchmarks import solvers
from implicit_slots.cli import main


def _rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_bench_solvers_prints_residual_and_time_per_solver_and_budget(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(solvers, "torchdeq_solvers", lambda: None)  # the table without torchdeq
    argv = ["bench", "solvers", "--maps", "affine", "slot-attention", "--budgets", "2", "6"]
    assert main([*argv, "--batch-size", "2", "--repeats", "1"]) == 0
    output = capsys.readouterr().out
    assert "torchdeq is not installed" in output
    rows = _rows(output)
    assert len(rows) == 2 * 3 * 2 and {row[3] for row in rows} == {"ours"}
    for row in rows:
        median, worst = (float(value) for value in row[7].split(" / "))
        assert 0 <= median <= worst < float("inf")
    # More evaluations reach a lower residual on the contraction.
    affine = {(row[1], int(row[2])): float(row[7].split(" / ")[1]) for row in rows if row[0] == "affine"}
    for name in solvers.SOLVERS:
        assert affine[(name, 6)] < affine[(name, 2)]
