"""One writer per run folder: an OS lock on ``RUN_DIR/train.lock`` held while a run trains.

The lock is ``fcntl.flock`` on the file, so the kernel releases it when the holding process dies, however
it dies: a lock file left behind by a killed run never blocks a resume. The holder writes its pid and host
into the file only so that a refused second writer can name it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

__all__ = ["LOCK_NAME", "RunFolderBusyError", "RunFolderLock"]

LOCK_NAME = "train.lock"


class RunFolderBusyError(RuntimeError):
    """Another live process holds the run folder's lock (the message names its pid and host)."""


class RunFolderLock:
    """Exclusive, non-blocking lock of a run folder for the lifetime of a training process.

    Args:
        run_dir: the run folder (created if missing).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderBusyError` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release())
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise RunFolderBusyError(
                f"run folder {str(self.path.parent)!r} is being trained by {holder} (lock {self.path}); "
                "wait for it to end or stop it, or choose another --run-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Give the lock up (also done by the kernel when the process ends)."""
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
