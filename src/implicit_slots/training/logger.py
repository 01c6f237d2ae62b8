"""Run logging: ``metrics.jsonl``, TensorBoard events and a console progress display (rank 0 only).

``metrics.jsonl`` holds one JSON object per logged step, always with ``step`` and ``loss`` on training
lines (NaN/Inf written as ``null``), e.g. ``{"step": 100, "loss": 0.12, "lr/main": 1e-4, ...}``;
validation and diagnostics values go into the object of the step they were computed at. On resume from
step ``s`` the lines after ``s`` (written by the interrupted run after its last checkpoint) are dropped
and TensorBoard purges its events after ``s``, so both logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor

__all__ = ["MetricsFileError", "RunLogger", "read_metrics", "truncate_metrics"]

METRICS_FILE = "metrics.jsonl"


class MetricsFileError(ValueError):
    """A line of ``metrics.jsonl`` other than the last is not a JSON record (the message names it)."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl``; a partial last line (a run killed while writing it) is skipped.

    Raises:
        MetricsFileError: an earlier line is damaged. Skipping it would lose its record silently (and a
            resume, which rewrites the file, would lose it for good).
    """
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise MetricsFileError(
                f"{path}: line {number} of {len(lines)} is not a JSON record ({line[:60]!r}); only the last "
                "line may be partial. Repair or delete that line, then run again"
            ) from None
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (atomically)."""
    if not path.exists():
        return
    kept = [record for record in read_metrics(path) if record.get("step", math.inf) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
    tmp.replace(path)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _format_duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunLogger:
    """Writes metrics and images; a disabled logger (ranks > 0) does nothing.

    Args:
        run_dir: the run folder (``metrics.jsonl`` and the TensorBoard events go directly in it).
        start_step: the step the run starts (or resumes) from.
        max_steps: the last step, for the progress display.
        resumed: True when continuing a run (drops log records after ``start_step``).
        enabled: False on ranks > 0.
        stream: console stream (a progress bar when it is a TTY, plain lines otherwise).
    """

    def __init__(
        self,
        run_dir: Path,
        start_step: int,
        max_steps: int,
        resumed: bool,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_steps = max_steps
        self.stream = stream if stream is not None else sys.stderr
        self._start_time = time.monotonic()
        self._start_step = start_step
        self._writer: Any = None
        self._bar: Any = None
        self._file: TextIO | None = None
        if not enabled:
            return
        path = run_dir / METRICS_FILE
        if resumed:
            truncate_metrics(path, start_step)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step + 1 if resumed else None)
        if self.stream.isatty():
            from tqdm import tqdm

            try:  # some pseudo-terminals report 0 columns, where tqdm would print an empty bar
                width = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                width = 0
            self._bar = tqdm(
                total=max_steps,
                initial=start_step,
                file=self.stream,
                dynamic_ncols=width > 0,
                ncols=None if width > 0 else 100,
                unit="step",
            )

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one record (``step`` + ``values``) to metrics.jsonl and TensorBoard."""
        if not self.enabled or not values:
            return
        assert self._file is not None
        # Non-finite values (a skipped step's NaN loss) become null: metrics.jsonl stays strict JSON.
        record = {"step": step, **{key: _finite_or_none(value) for key, value in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in values.items():
            self._writer.add_scalar(key, float(value), step)

    def images(self, step: int, images: dict[str, Tensor]) -> None:
        """Log float (N, 3, H, W) images in [0, 1] to TensorBoard."""
        if not self.enabled:
            return
        for name, value in images.items():
            self._writer.add_images(f"images/{name}", value.detach().float().clamp(0, 1).cpu(), step)

    def progress(self, step: int, loss: float | None, extra: str = "") -> None:
        """Advance the bar (TTY) or, when ``loss`` is given and the stream is not a TTY, print a line."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if loss is not None:
                self._bar.set_postfix_str(f"loss {loss:.4g}{extra}", refresh=False)
            return
        if loss is None:
            return
        elapsed = time.monotonic() - self._start_time
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.max_steps - step) / rate if rate > 0 else math.inf
        eta_text = _format_duration(eta) if math.isfinite(eta) else "?"
        print(
            f"step {step}/{self.max_steps} loss {loss:.4g}{extra} | {rate:.2f} steps/s | eta {eta_text}",
            file=self.stream,
            flush=True,
        )

    def message(self, text: str) -> None:
        """A one-off console message (keeps the progress bar intact)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Flush and close every output."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None
