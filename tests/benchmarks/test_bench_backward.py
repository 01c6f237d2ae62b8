"""The Table 1 benchmark runs, writes its records, and shows the memory property it exists to show."""

import json
from pathlib import Path

from implicit_slots.cli import main


def test_bench_backward_records_and_flat_implicit_memory(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "table1.json"
    code = main(
        [
            "bench", "backward", "--iterations", "1", "4", "8", "--batch-size", "2", "--num-inputs", "16",
            "--input-dim", "8", "--slot-dim", "8", "--mlp-hidden-dim", "8", "--num-slots", "3",
            "--repeats", "1", "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    assert "| gradient | iterations |" in capsys.readouterr().out
    records = json.loads(out.read_text())
    assert {"gradient", "iterations", "forward_ms", "backward_ms", "saved_bytes"} <= set(records[0])
    saved = {(r["gradient"], r["iterations"]): r["saved_bytes"] for r in records}
    for gradient in ("neumann", "ift"):  # O(1) in the number of iterations
        assert saved[(gradient, 1)] == saved[(gradient, 8)]
    # unrolled grows linearly: equal increments per added iteration
    step_a = saved[("unrolled", 4)] - saved[("unrolled", 1)]
    step_b = saved[("unrolled", 8)] - saved[("unrolled", 4)]
    assert step_a > 0 and abs(step_b / 4 - step_a / 3) <= 0.05 * step_a / 3
