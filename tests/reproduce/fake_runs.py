"""A fake run folder, as `train` + `evaluate` leave it, for the `reproduce` report tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from implicit_slots.reproduce.runs import RUN_STATUS_FILE


def write_fake_run(
    run_dir: Path,
    *,
    max_steps: int = 100,
    last_step: int = 100,
    cross_entropy: float = 50.0,
    eval_metrics: dict[str, float] | None = None,
    diverged: bool = False,
) -> None:
    """A run folder as `train` + `evaluate` leave it (config.yaml, metrics.jsonl, eval/metrics.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"training": {"max_steps": max_steps}}))
    lines = []
    for step in range(10, last_step + 1, 10):
        # cross entropy falls linearly to `cross_entropy` at step 100; Jacobian norm = step / 100.
        record = {"step": step, "loss": 1.0, "cross_entropy": cross_entropy + (100 - step)}
        if step % 20 == 0:
            record["diag/jacobian_norm_mean"] = step / 100
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if eval_metrics is not None:
        (run_dir / "eval").mkdir(exist_ok=True)
        record = {"checkpoint_step": last_step, "metrics": eval_metrics}
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(record))
    if diverged:
        (run_dir / RUN_STATUS_FILE).write_text(
            json.dumps({"train": "diverged", "checkpoint_step": last_step})
        )
