"""The ``implicit-slots`` command line.

Each sub-command lives in its own module under ``implicit_slots.cli`` and exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` (a callable taking the parsed
namespace and returning an exit code). Modules are imported only when the command line is built, so a
broken optional command never breaks the others' ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence

from implicit_slots import __version__

# Sub-command name -> module that registers it.
COMMANDS: dict[str, str] = {
    "train": "implicit_slots.cli.train",
    "evaluate": "implicit_slots.cli.evaluate",
    "reproduce": "implicit_slots.cli.reproduce",
    "data": "implicit_slots.cli.data",
    "bench": "implicit_slots.cli.bench",
    "inspect": "implicit_slots.cli.inspect",
    "main-job": "implicit_slots.cli.main_job",
    "segment": "implicit_slots.cli.segment",
    "pretrained": "implicit_slots.cli.pretrained",
}


def help_text(doc: str | None, *, first_paragraph: bool = False) -> str | None:
    """A module docstring as ``--help`` shows it: without reStructuredText markup (````code````,
    ``:role:`target```), optionally only its first paragraph."""
    if doc is None:
        return None
    text = doc.split("\n\n")[0] if first_paragraph else doc
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="implicit-slots", description=help_text(__doc__, first_paragraph=True)
    )
    parser.add_argument("--version", action="version", version=f"implicit-slots {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # the command is not built yet; the others still work
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"implicit-slots {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
