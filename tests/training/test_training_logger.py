"""Run logging: plain lines off a terminal, a progress bar on one, strict-JSON metrics, resume truncation."""

import io
import json
from pathlib import Path

import pytest

from implicit_slots.training.logger import MetricsFileError, RunLogger, read_metrics, truncate_metrics


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    logger = RunLogger(tmp_path, start_step=0, max_steps=10, resumed=False, stream=stream)
    logger.progress(1, None)  # not a log step: prints nothing
    logger.progress(5, 0.25)
    logger.log(5, {"loss": 0.25, "lr/main": 1e-3, "bad": float("nan")})
    logger.close()
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("step 5/10 loss 0.25 | ") and "steps/s | eta " in line
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 5,
        "loss": 0.25,
        "lr/main": 1e-3,
        "bad": None,
    }


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    stream = _Terminal()
    logger = RunLogger(tmp_path, start_step=2, max_steps=10, resumed=False, stream=stream)
    for step in range(3, 11):
        logger.progress(step, 0.5 if step % 4 == 0 else None)
    logger.message("a message")
    logger.close()
    text = stream.getvalue()
    assert "10/10" in text and "loss 0.5" in text and "a message" in text and "step/s" in text


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    logger = RunLogger(
        tmp_path, start_step=0, max_steps=10, resumed=False, enabled=False, stream=io.StringIO()
    )
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_resume_truncation_drops_later_records_and_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "loss": 0.8}\n{"step": 4, "lo'
    )
    truncate_metrics(path, last_step=2)
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}]


def test_a_damaged_line_before_the_last_is_an_error_and_truncation_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    text = '{"step": 1, "loss": 1.0}\n{"step": 2, "lo\x00\n{"step": 3, "loss": 0.8}\n'
    path.write_text(text)
    with pytest.raises(MetricsFileError, match=r"metrics\.jsonl: line 2 of 3 is not a JSON record"):
        read_metrics(path)
    with pytest.raises(MetricsFileError):
        truncate_metrics(path, last_step=3)
    assert path.read_text() == text  # nothing rewritten, nothing lost
