"""Subprocess entry point for the engine tests: registers the tiny model and dataset, then either runs
the CLI (``cli ARGS...``) or, under torchrun, ``train()`` and dumps this rank's parameters
(``ddp CONFIG RUN_DIR``)."""

import sys
from pathlib import Path

import tiny_training_setup
import torch

from implicit_slots.experiment import datasets as data_module

tiny_training_setup.register_tiny_model()
data_module.build_dataset_split = tiny_training_setup.tiny_dataset_factory


def _fill_the_disk_after(successful_writes: int) -> None:
    """Make every checkpoint write after the first ``successful_writes`` fail like a full disk (at the
    fsync; torch.save itself is also used by torch.distributed to pickle objects, so it stays intact)."""
    import errno
    import os

    real, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(1)
        if len(calls) > successful_writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    os.fsync = fsync


def main() -> int:
    mode, *args = sys.argv[1:]
    if mode == "cli":
        from implicit_slots.cli import main as cli_main

        return cli_main(args)
    if mode == "ddp":
        import os

        from implicit_slots.config import load_config
        from implicit_slots.training import train

        config_path, run_dir = args
        rank = int(os.environ["RANK"])
        pid_file = Path(run_dir).parent / f"{Path(run_dir).name}-rank{rank}.pid"
        pid_file.write_text(str(os.getpid()))  # lets a test signal one rank
        fail_after = os.environ.get("TEST_FAIL_CHECKPOINT_WRITES_AFTER")
        if fail_after is not None and rank == 0:
            _fill_the_disk_after(int(fail_after))
        result = train(load_config(config_path), run_dir)
        state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
        torch.save(
            {
                "state": state,
                "world_size": int(os.environ["WORLD_SIZE"]),
                "status": result.status,
                "step": result.step,
            },
            Path(run_dir) / f"rank{rank}.pt",
        )
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
