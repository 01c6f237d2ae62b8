"""``implicit-slots data`` (list, preview, materialise) and the data speed benchmark's contract."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from implicit_slots.benchmarks import data_speed
from implicit_slots.cli import main
from implicit_slots.data import build_dataset


def test_list_names_every_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "clevr-lite" in out and "dm-clevr6" in out and "(needs --root)" in out


def test_preview_writes_images_and_masks(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    args = ["data", "preview", "sprites", "--out", str(out), "--count", "3", "--image-size", "16"]
    assert main([*args, "--option", "max_objects=2"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (32, 48, 3)
    ds = build_dataset("sprites", image_size=16, max_objects=2)
    expected = np.round(ds[1]["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(grid[:16, 16:32], expected)
    background = ds[1]["masks"][0].numpy() == 1
    assert (grid[16:, 16:32][background] == 0).all() and (grid[16:, 16:32][~background] != 0).any(
        axis=-1
    ).all()


def test_materialise_writes_the_cache_build_dataset_reads(tmp_path: Path) -> None:
    args = ["data", "materialise", "clevr-lite", "--count", "2", "--out", str(tmp_path), "--image-size", "16"]
    assert main([*args, "--split", "val", "--option", "max_objects=4"]) == 0
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and (entries[0] / "images.npy").is_file()
    cached = build_dataset("clevr-lite", "val", 16, num_samples=2, max_objects=4, cache_dir=tmp_path)
    assert type(cached).__name__ == "CachedDataset" and cached.num_objects_max == 4
    direct = build_dataset("clevr-lite", "val", 16, num_samples=2, max_objects=4)
    assert torch.equal(cached[1]["masks"], direct[1]["masks"])


def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "preview", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown dataset 'nope'; valid datasets:" in capsys.readouterr().err
    assert (
        main(["data", "preview", "clevr", "--out", str(tmp_path / "x.png"), "--root", str(tmp_path / "no")])
        == 2
    )
    assert "folder not found" in capsys.readouterr().err
    assert (
        main(["data", "preview", "sprites", "--out", str(tmp_path / "x.png"), "--option", "antialias"]) == 2
    )
    assert "--option expects KEY=VALUE" in capsys.readouterr().err


def test_preview_output_and_unreadable_images_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["data", "preview", "sprites", "--image-size", "16", "--count", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 2  # a folder, not a PNG file
    assert "--out" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "grid")]) == 2  # no .png: PIL cannot tell the format
    assert "--out" in capsys.readouterr().err
    root = tmp_path / "mirror"
    root.mkdir()
    for index in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / f"{index}.png")
    (root / "0.png").write_bytes(b"not a png")
    assert (
        main(["data", "preview", "clevr-mirror", "--root", str(root), "--out", str(tmp_path / "m.png")]) == 2
    )
    assert "0.png: cannot read image" in capsys.readouterr().err


def test_benchmark_prints_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    data_speed.add_arguments(parser)
    args = parser.parse_args(
        ["--datasets", "tetrominoes", "--sizes", "16", "--antialias", "1", "2", "--images", "2"]
    )
    assert data_speed.run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| dataset | size | anti-aliasing | images/s")
    assert [line.split(" | ")[:3] for line in lines[2:]] == [
        ["| tetrominoes", "16x16", "1x1"],
        ["| tetrominoes", "16x16", "2x2"],
    ]
