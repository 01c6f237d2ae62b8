"""``implicit-slots inspect onset``: onset statistics on hand values, and the command on a tiny SLATE run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from implicit_slots.cli import main
from implicit_slots.evaluation import onset as script


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


def test_background_codes_count_is_checked() -> None:
    with pytest.raises(ValueError, match=r"number of background codes must be in \[1, 4\], got 0"):
        script.background_codes_of(torch.zeros(2, 3, dtype=torch.long), 4, 0)


def test_inspect_onset_prints_one_row_for_a_tiny_slate_run(
    tiny_slate_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["inspect", "onset", str(tiny_slate_run), "--images", "4", "--batch-size", "3"]
    assert main([*argv, "--background-codes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4].startswith(f"{tiny_slate_run} (step 1, test, 4 images, 1 background codes)")
    assert lines[-3].startswith("| onsets | p(background)")
    cells = [cell.strip() for cell in lines[-1].strip("|").split("|")]
    assert len(cells) == 8 and int(cells[0]) >= 1
    assert all(0.0 <= float(cell) <= 1.0 for cell in cells[1:])


def test_measure_onsets_matches_the_statistics_of_its_parts(tiny_slate_run: Path) -> None:
    # The report equals the hand-assembled statistics, batch boundaries included (3 + 1 images).
    from implicit_slots.evaluation.runner import load_trained_model
    from implicit_slots.training.data import build_dataset_split

    model, config, _ = load_trained_model(tiny_slate_run)
    dataset = build_dataset_split(config.data, "test")
    images = torch.stack([dataset[i]["image"] for i in range(4)])
    report = script.measure_onsets(
        model, [images[:3], images[3:]], background_codes=2, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        tokens = model.encode_image_tokens(images)
        generator = torch.Generator().manual_seed(5)
        slots = torch.cat(
            [
                model.encode_slots(model.embed_tokens(part)[:, 1:], generator=generator).slots
                for part in (tokens[:3], tokens[3:])
            ]
        )
        background = script.background_codes_of(tokens, model.vocab_size, 2)
        expected = script.onset_statistics(model.token_logits(tokens, slots), tokens, background)
    assert report.images == 4 and torch.equal(report.background, background)
    assert report.onset.onsets == expected.onsets
    assert report.onset.background_probability == pytest.approx(expected.background_probability, rel=1e-5)
    assert report.onset.background_share == pytest.approx(expected.background_share)
    with torch.no_grad():
        greedy = script.greedy_statistics(model.generate_tokens(slots), tokens, background)
    assert report.greedy.object_recall == pytest.approx(greedy.object_recall)


def test_inspect_onset_names_a_missing_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "onset", str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder: no config.yaml" in capsys.readouterr().err


def test_inspect_onset_rejects_bad_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "onset", str(tmp_path), "--images", "0"]) == 2
    assert "--images must be >= 1, got 0" in capsys.readouterr().err
