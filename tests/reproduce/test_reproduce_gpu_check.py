"""benchmarks/gpu_check.py: without CUDA it says so and runs its code path at a tiny size (exit 0)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        code = module.main(["--cpu-dry-run"])
    finally:
        del sys.modules["gpu_check"]
    assert code == 0
    out = capsys.readouterr().out
    assert "NOT the GPU check" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| check | setting | result |"
    checks = [line.split(" | ")[0].lstrip("| ") for line in table[1:]]
    assert checks == [
        "SLATE training step, vanilla",
        "SLATE training step, IN",
        "cached AR generation",
        "Table 3 run: training",
        "Table 3 run: last loss",
        "Table 3 run: evaluation",
        "total",
    ]
    assert "2 steps in" in out and "mse_autoregressive" in out
