"""RunFolderLock: one holder at a time, named in the refusal; released on release() (and by the kernel)."""

import os
import socket
from pathlib import Path

import pytest

from implicit_slots.training.lock import LOCK_NAME, RunFolderBusyError, RunFolderLock


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path: Path) -> None:
    with RunFolderLock(tmp_path / "run"):
        expected = f"being trained by process {os.getpid()} on host {socket.gethostname()}"
        with pytest.raises(RunFolderBusyError, match=expected):
            RunFolderLock(tmp_path / "run").acquire()
    with RunFolderLock(tmp_path / "run"):  # free again after release
        pass


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("process 999999999 on host elsewhere\n")
    with RunFolderLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"process {os.getpid()} on host {socket.gethostname()}\n"
