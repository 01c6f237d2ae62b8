"""benchmarks/slate_onset_probability.py: onset statistics on hand values, and the script on a tiny run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from implicit_slots.config import load_config
from implicit_slots.training import train

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "slate_onset_probability", ROOT / "benchmarks" / "slate_onset_probability.py"
)
assert SPEC is not None and SPEC.loader is not None
script = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = script  # dataclasses look the module up
SPEC.loader.exec_module(script)


def test_onset_statistics_on_hand_values() -> None:
    # Code 0 is the background (most frequent); onsets are positions 2 (after 0) and 0 of image 1 (start).
    tokens = torch.tensor([[0, 0, 1, 1, 0, 0], [2, 0, 0, 0, 0, 0]])
    logits = torch.zeros(2, 6, 3)
    logits[0, 2] = torch.tensor([math.log(3.0), 0.0, 0.0])  # p = (0.6, 0.2, 0.2): argmax background
    logits[1, 0] = torch.tensor([0.0, 0.0, math.log(8.0)])  # p = (0.1, 0.1, 0.8)
    background = script.background_codes_of(tokens, 3, 1)
    assert background.tolist() == [0]
    stats = script.onset_statistics(logits, tokens, background)
    assert stats.onsets == 2
    assert stats.background_probability == pytest.approx((0.6 + 0.1) / 2)
    assert stats.true_code_probability == pytest.approx((0.2 + 0.8) / 2)
    assert stats.argmax_background_fraction == pytest.approx(0.5)
    assert stats.background_share == pytest.approx(9 / 12)
    with pytest.raises(ValueError, match="no object onsets"):
        script.onset_statistics(logits, torch.zeros(2, 6, dtype=torch.long), background)


def test_greedy_statistics_on_hand_values() -> None:
    tokens = torch.tensor([[0, 1, 1, 2], [0, 0, 3, 0]])  # object tokens: 1, 1, 2, 3
    greedy = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 1]])  # non-background at 2 of 4 object tokens
    stats = script.greedy_statistics(greedy, tokens, torch.tensor([0]))
    assert stats.object_recall == pytest.approx(2 / 4)
    assert stats.object_exact == pytest.approx(1 / 4)  # only the first 1 is reproduced
    assert script.background_codes_of(tokens, 4, 1).tolist() == [0]
    with pytest.raises(ValueError, match="no object tokens"):
        script.greedy_statistics(greedy, torch.zeros_like(tokens), torch.tensor([0]))


def test_script_prints_one_row_for_a_tiny_slate_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [
        "model.image_size=16",
        "model.vocab_size=64",
        "model.dvae_hidden_channels=4",
        "model.d_model=16",
        "model.num_heads=2",
        "model.num_decoder_blocks=1",
        "model.slot_attention.slot_dim=16",
        "model.slot_attention.mlp_hidden_dim=16",
        "model.slot_attention.num_iterations=2",
        "data.image_size=16",
        "data.cache_dir=null",
        "data.num_samples.train=4",
        "data.num_samples.test=4",
        "training.max_steps=1",
        "training.batch_size=2",
        "training.num_threads=1",
        "diagnostics.every=0",
    ]
    config = load_config(ROOT / "configs" / "slate_clevr_lite.yaml", overrides)
    train(config, tmp_path / "run")
    assert script.main([str(tmp_path / "run"), "--images", "4", "--background-codes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("| onsets | p(background)")
    assert len(lines[-1].split("|")) == 10


def test_script_names_a_missing_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "is not a run folder: no config.yaml" in capsys.readouterr().err
