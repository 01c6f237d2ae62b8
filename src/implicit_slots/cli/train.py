"""``implicit-slots train``: train a model from a config file, or resume a run.

Usage::

    implicit-slots train [CONFIG.yaml] [--run-dir DIR] [KEY=VALUE ...]
    implicit-slots train --resume RUN_DIR [KEY=VALUE ...]

Overrides are dotted config keys (``training.max_steps=1000``, ``model.num_slots=11``). A new run goes to
``--run-dir`` or ``runs/<config-stem>-<UTC timestamp>``; ``--resume`` continues the run in RUN_DIR from its
``checkpoints/last.pt`` with RUN_DIR/config.yaml plus the overrides. Exit codes: 0 finished, 1 crashed
(an unexpected exception, with its traceback; or, with one message, a checkpoint that could not be written
or an image file that could not be read),
2 bad command line / config (or a run folder another live process is training), 3 stopped by NaN/Inf steps
(diverged; the last good state is checkpointed), 4 stopped by SIGTERM / SIGUSR1 / SIGINT after finishing the
step and writing a checkpoint (``--resume`` continues it; a cluster job script requeues on 4).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError, help_text
from implicit_slots.config import SECTIONS, ConfigError, load_config


class _ValueThenOverrides(argparse.Action):
    """``--run-dir DIR k=v ...``: the first value is the option's, the rest are overrides.

    argparse cannot put positionals after an option (``train cfg.yaml --run-dir DIR k=v``), so the
    options that take a folder also collect the ``KEY=VALUE`` items that follow them.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        values = list(values)
        setattr(namespace, self.dest, values[0])
        extra = list(getattr(namespace, "trailing_overrides", None) or [])
        setattr(namespace, "trailing_overrides", extra + values[1:])  # noqa: B010


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config (or resume a run)",
        description=help_text(__doc__, first_paragraph=True),
        epilog="Examples:\n"
        "  implicit-slots train configs/paper/cpu/fig5_implicit_all_tricks.yaml training.max_steps=1000\n"
        "  implicit-slots train --resume runs/fig5-20260101-120000 training.max_steps=20000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "items",
        nargs="*",
        metavar="[CONFIG.yaml] [KEY=VALUE ...]",
        help="config file (optional) followed by dotted overrides",
    )
    parser.add_argument("--run-dir", action=_ValueThenOverrides, nargs="+", metavar="DIR", help="run folder")
    parser.add_argument(
        "--resume",
        action=_ValueThenOverrides,
        nargs="+",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.pt",
    )
    parser.set_defaults(func=run, trailing_overrides=[])


def _is_override(item: str) -> bool:
    key = item.split("=", 1)[0]
    return "=" in item and key.split(".", 1)[0] in SECTIONS


def _split_items(items: Sequence[str]) -> tuple[str | None, list[str]]:
    if items and not _is_override(items[0]):
        return items[0], list(items[1:])
    return None, list(items)


def data_read_error_message(error: Exception, run_dir: Path) -> str:
    """One line for a data file that could not be read during training (an :class:`ImageReadError`).

    Under DataLoader workers the message is the worker's traceback; its last line holds the original one.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    text = text.removeprefix(f"{type(error).__module__}.{type(error).__name__}: ")
    return (
        f"reading the data: {text}; fix or remove the file (folder datasets: data.options.check_files=true "
        f"skips unreadable images), then continue from the last checkpoint: "
        f"implicit-slots train --resume {shlex.quote(str(run_dir))}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from implicit_slots.data import ImageReadError
    from implicit_slots.training import (
        DIVERGED_EXIT_CODE,
        INTERRUPTED_EXIT_CODE,
        CheckpointWriteError,
        TrainingDivergedError,
        TrainingSetupError,
        train,
    )

    config_path, overrides = _split_items([*args.items, *args.trailing_overrides])
    for item in overrides:
        if "=" not in item:
            raise CommandError(f"expected KEY=VALUE overrides after the config file, got {item!r}")
    command = shlex.join(["implicit-slots", *sys.argv[1:]]) if sys.argv else None
    try:
        if args.resume is not None:
            if config_path is not None or args.run_dir is not None:
                raise CommandError(
                    "--resume takes the config from RUN_DIR/config.yaml; pass only KEY=VALUE overrides"
                )
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").is_file():
                raise CommandError(f"cannot resume {str(run_dir)!r}: it has no config.yaml")
            config = load_config(run_dir / "config.yaml", overrides)
            resume = True
        else:
            config = load_config(config_path, overrides)
            if args.run_dir is not None:
                run_dir = Path(args.run_dir)
            else:
                stem = Path(config_path).stem if config_path is not None else config.model.name
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
                run_dir = Path("runs") / f"{stem}-{stamp}"
            resume = False
        result = train(config, run_dir, resume=resume, command=command)
    except (ConfigError, TrainingSetupError) as error:
        raise CommandError(str(error)) from error
    except TrainingDivergedError as error:
        print(f"implicit-slots train: error: {error}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except CheckpointWriteError as error:
        print(f"implicit-slots train: error: {error}", file=sys.stderr)
        return 1
    except ImageReadError as error:  # a damaged file of a folder dataset, read when its batch came up
        print(f"implicit-slots train: error: {data_read_error_message(error, run_dir)}", file=sys.stderr)
        return 1
    print(
        f"{result.status} at step {result.step}: run folder {result.run_dir}"
        + (f", last loss {result.last_loss:.6g}" if result.last_loss is not None else "")
    )
    return INTERRUPTED_EXIT_CODE if result.status == "interrupted" else 0
