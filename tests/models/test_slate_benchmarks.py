"""The SLATE benchmarks run end to end on tiny settings and print their tables (no timing assertions)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from implicit_slots.benchmarks import generation, training_step
from implicit_slots.cli import main
from implicit_slots.models.slate import Slate, SlateConfig, build_slate


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def tiny_generation_model(image_size: int) -> Slate:
    config = SlateConfig(
        image_size=image_size,
        vocab_size=16,
        d_model=16,
        num_heads=2,
        num_decoder_blocks=1,
        dvae_hidden_channels=8,
    )
    return build_slate(config).eval()


def test_generation_benchmark_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(generation, "build_generation_model", tiny_generation_model)
    assert generation.run(parse(generation, ["--image-sizes", "16", "24", "--batch-size", "2"])) == 0
    assert (
        generation.run(parse(generation, ["--image-sizes", "24", "--batch-size", "2", "--quick", "4"])) == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| 16x16 | 16 |") and lines[1].endswith("| True |")
    assert lines[2].startswith("| 24x24 | 36 |") and lines[2].endswith("| True |")
    assert "(estimated)" in lines[4] and lines[4].endswith("| first 32: True |")
    torch.set_num_threads(1)


def test_estimate_sums_interpolated_step_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # Step time = prefix length (exact linear): the estimate is the exact sum 1 + 2 + ... + T.
    model = tiny_generation_model(16)
    fake = lambda model, slots, length: generation.Timing(float(length), 2.0 * length)  # noqa: E731
    monkeypatch.setattr(generation, "uncached_step_time", fake)
    estimate = generation.estimate_uncached_time(model, torch.zeros(1, 3, 192), 5)
    assert estimate.wall == pytest.approx(16 * 17 / 2)
    assert estimate.cpu == pytest.approx(16 * 17)


def test_training_step_benchmark_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--iterations", "2", "--batch-size", "2", "--image-size", "16", "--warmup", "0", "--steps", "1"]
    argv += ["--model", "d_model=16", "vocab_size=16", "num_heads=2", "num_decoder_blocks=1", "--profile"]
    assert training_step.run(parse(training_step, argv)) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| vanilla |") or line.startswith("| IN |")]
    assert len(rows) == 2 and rows[0].endswith("| 1.000 / 1.000 |")
    assert "aten::" in out  # the profile table
    torch.set_num_threads(1)


def test_training_step_overrides_are_checked() -> None:
    with pytest.raises(ValueError, match=r"--model 'widths=3': expected FIELD=VALUE with FIELD in"):
        training_step._parse_overrides(["widths=3"])
    assert training_step._parse_overrides(["d_model=64", "dropout=0"]) == {"d_model": 64, "dropout": 0.0}


TINY_SLATE_CONFIG = """
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


def test_training_step_times_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_SLATE_CONFIG)
    argv = ["--config", str(config), "--warmup", "1", "--steps", "2"]
    assert training_step.run(parse(training_step, argv)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SLATE training step of {config}: batch 2, 16x16, 1 thread(s)")
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| variant | iterations | median ms/step |")
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]  # the config's own variant and count
    assert len(rows) == 2 and cells[:2] == ["IN", "2"] and float(cells[2]) > 0 and cells[5] == "-"
    # Explicit options win over the config's.
    argv += ["--variants", "vanilla", "--batch-size", "3"]
    assert training_step.run(parse(training_step, argv)) == 0
    out = capsys.readouterr().out
    assert "batch 3, 16x16" in out and "| vanilla | 2 |" in out
    torch.set_num_threads(1)


def test_training_step_bad_inputs_end_in_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    autoencoder = tmp_path / "ae.yaml"
    autoencoder.write_text("model: {name: autoencoder, image_size: 64}\ndata: {name: tetrominoes}\n")
    for argv, message in (
        (["--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--config", str(autoencoder)], "configures model 'autoencoder'; train-step times SLATE"),
        (["--model", "widths=3"], "--model 'widths=3': expected FIELD=VALUE"),
    ):
        assert main(["bench", "train-step", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    torch.set_num_threads(1)


def test_training_step_can_time_a_compiled_model() -> None:
    overrides = {"d_model": 16, "vocab_size": 16, "num_heads": 2, "num_decoder_blocks": 1}
    wall, cpu = training_step.time_configuration(
        "IN", 2, 2, 16, overrides, warmup=1, steps=1, compile_backend="eager"
    )
    assert len(wall) == len(cpu) == 1 and wall[0] > 0
