"""``implicit-slots bench NAME``: benchmarks that print Markdown tables.

Each benchmark module under ``implicit_slots.benchmarks`` exposes ``DESCRIPTION: str``,
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from implicit_slots.benchmarks import BenchmarkError

BENCHMARKS: dict[str, str] = {
    "backward": "implicit_slots.benchmarks.backward",
    "generation": "implicit_slots.benchmarks.generation",
    "train-step": "implicit_slots.benchmarks.training_step",
    "data": "implicit_slots.benchmarks.data_speed",
    "tfrecord": "implicit_slots.benchmarks.tfrecord_speed",
    "solvers": "implicit_slots.benchmarks.solvers",
    "gpu": "implicit_slots.benchmarks.gpu",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and one sub-command per available benchmark."""
    parser = subparsers.add_parser("bench", help="run a benchmark and print its table")
    bench_subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module_name in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        sub = bench_subparsers.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(func=_one_line_errors(module.run))


def _one_line_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with a :class:`BenchmarkError` turned into the CLI's one-line error."""

    def wrapped(args: argparse.Namespace) -> int:
        from implicit_slots.cli import CommandError

        try:
            return run(args)
        except BenchmarkError as error:
            raise CommandError(str(error)) from error

    return wrapped
