"""``implicit-slots bench gpu``: without CUDA it says so and runs its code path at a tiny size (exit 0)."""

import pytest

from implicit_slots.cli import main


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gpu", "--cpu-dry-run"]) == 0
    out = capsys.readouterr().out
    assert "NOT the GPU check" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| check | setting | result |"
    checks = [line.split(" | ")[0].lstrip("| ") for line in table[1:]]
    assert checks == [
        "SLATE training step, vanilla, eager, bf16 autocast",
        "SLATE training step, IN, eager, bf16 autocast",
        "SLATE training step, IN, eager, fp32 (TF32 matmuls)",
        "SLATE training step, IN, compiled, bf16 autocast",
        "SLATE training step, vanilla, compiled, bf16 autocast",
        "cached AR generation",
        "Table 3 run: training",
        "Table 3 run: last loss",
        "Table 3 run: evaluation",
        "total",
    ]
    assert "2 steps in" in out and "mse_autoregressive" in out and "compilation" in out
