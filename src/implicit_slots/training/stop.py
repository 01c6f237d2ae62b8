"""Stop signals: SIGTERM, SIGUSR1 or SIGINT ask a run to finish its step, checkpoint it and return."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopRequest"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
"""Signals that make :func:`train` finish the current step, checkpoint it and return (SLURM sends SIGTERM
before a preemption's SIGKILL, or SIGUSR1 at a configured time with ``--signal=USR1@SECONDS``)."""


class StopRequest:
    """Each of :data:`STOP_SIGNALS` sets a flag checked once per step; a second SIGINT raises
    KeyboardInterrupt (a way out when a step hangs)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def describe(self) -> str:
        """The received signal's name, for messages (under DDP another rank may have received it)."""
        return signal.Signals(self.signal).name if self.signal is not None else "a signal on another rank"

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
