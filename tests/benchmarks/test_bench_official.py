"""The side-by-side benchmark runs each implementation in its own process, alternating, and prints the ratio.

No official SLATE code is in this repository: the tests write a stand-in checkout with the same interface
(``slate.SLATE(args)``, ``forward(image, tau, hard) -> (recon, cross_entropy, mse, attns)``,
``reconstruct_autoregressive(image)``) that also records which process imported it.
"""

from pathlib import Path

import pytest

from implicit_slots.benchmarks import official
from implicit_slots.cli import main

STAND_IN = """
import os
import torch
from torch import nn

with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")


class SLATE(nn.Module):
    def __init__(self, args):
        super().__init__()
        assert args.vocab_size == 1024 and args.d_model == 192
        self.dvae = nn.Linear(3, 3)
        self.rest = nn.Linear(3, 3)

    def forward(self, image, tau, hard):
        pixels = image.flatten(2).transpose(1, 2)  # (B, HW, 3)
        mse = (self.dvae(pixels) - pixels).square().sum() / image.shape[0]
        cross_entropy = self.rest(pixels).square().mean()
        return image, cross_entropy, mse, None

    def reconstruct_autoregressive(self, image, eval=False):
        return image
"""


def _tiny_options() -> list[str]:
    return ["--image-size", "16", "--batch-size", "2", "--iterations", "2", "--steps", "2", "--warmup", "0"]


def _write_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    checkout = tmp_path / "slate-checkout"
    checkout.mkdir()
    (checkout / "slate.py").write_text(STAND_IN)
    log = tmp_path / "imports.log"
    monkeypatch.setenv("STAND_IN_LOG", str(log))
    return checkout, log


@pytest.mark.slow
def test_train_step_against_official_alternates_fresh_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout, log = _write_stand_in(tmp_path, monkeypatch)
    argv = ["bench", "train-step", "--against-official", str(checkout), "--rounds", "2", "--threads", "1"]
    assert main([*argv, *_tiny_options()]) == 0
    out = capsys.readouterr().out
    rounds = [
        line.split(":")[0] + ":" + line.split(":")[1].split()[0]
        for line in out.splitlines()
        if line.startswith("round")
    ]
    # Alternating, order flipped in round 2; each official run imported the checkout in a new process.
    assert rounds == ["round 1:official", "round 1:ours", "round 2:ours", "round 2:official"]
    assert len(set(log.read_text().split())) == 2
    table = [line for line in out.splitlines() if line.startswith("| official") or line.startswith("| ours")]
    assert len(table) == 2 and all(
        len(line.split("|")[2].split(",")) == 2 for line in table
    )  # 2 round medians
    assert "official / ours: " in out and "load average" in out


def test_generation_against_official(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout, _ = _write_stand_in(tmp_path, monkeypatch)
    argv = ["bench", "generation", "--against-official", str(checkout), "--image-sizes", "16"]
    assert main([*argv, "--batch-size", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "16x16 (16 tokens):" in out and "official / ours: " in out


def test_against_official_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "train-step", "--against-official", str(tmp_path)]) == 2
    assert "is not a checkout of official SLATE (no slate.py there)" in capsys.readouterr().err
    checkout, _ = _write_stand_in(tmp_path, monkeypatch)
    (checkout / "slate.py").write_text("raise ImportError('broken checkout')\n")
    assert main(["bench", "train-step", "--against-official", str(checkout), *_tiny_options()]) == 2
    err = capsys.readouterr().err
    assert "the official train-step process failed" in err and "broken checkout" in err
    with pytest.raises(ValueError, match=r"no slate\.py"):
        official.check_checkout(tmp_path / "missing")
