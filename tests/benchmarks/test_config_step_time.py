"""benchmarks/config_step_time.py: times a config's model and prints one table row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "config_step_time.py"

TINY_SLATE = """
model:
  name: slate
  image_size: 16
  vocab_size: 12
  dvae_hidden_channels: 8
  d_model: 16
  num_heads: 2
  num_decoder_blocks: 1
  slot_attention: {num_slots: 3, slot_dim: 16, mlp_hidden_dim: 16, num_iterations: 2, variant: IN}
data: {name: clevr-lite, image_size: 16}
training: {batch_size: 2, device: cpu}
"""


def test_times_a_config_and_prints_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("config_step_time", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_SLATE)
    assert module.main([str(config), "--warmup", "1", "--steps", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| config | threads | batch | ms/step |"
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert cells[0] == str(config) and cells[1:3] == ["1", "2"] and float(cells[3]) > 0
