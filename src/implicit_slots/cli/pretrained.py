"""``implicit-slots pretrained``: the trained models that ship with the package.

Usage::

    implicit-slots pretrained list                   # name, model, data, size, headline numbers
    implicit-slots pretrained show NAME              # the model card
    implicit-slots pretrained export RUN_DIR OUT.pt  # a run's last checkpoint as a weights file
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError


def register(subparsers: Any) -> None:
    """Add the ``pretrained`` sub-command."""
    parser = subparsers.add_parser(
        "pretrained",
        help="list, show or export trained models (weights only)",
        description="The trained models shipped with implicit-slots, and the export of a run's weights.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the shipped models").set_defaults(func=_list)
    show = actions.add_parser("show", help="print a shipped model's card")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(func=_show)
    export = actions.add_parser("export", help="write a run's last checkpoint as a weights file")
    export.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run folder (or a checkpoint file)")
    export.add_argument("out", metavar="OUT", type=Path, help="weights file to write (.pt)")
    export.set_defaults(func=_export)


def _list(args: argparse.Namespace) -> int:
    from implicit_slots.pretrained import available_pretrained, get_card, weights_path

    names = available_pretrained()
    if not names:
        print("no trained models ship with this installation")
        return 0
    print("| name | model | data | steps | size | evaluation |")
    print("|---|---|---|---|---|---|")
    for name in names:
        card = get_card(name)
        size = weights_path(name).stat().st_size / 2**20
        headline = ", ".join(f"{key} {value:.3g}" for key, value in list(card.metrics.items())[:4])
        print(f"| {name} | {card.model} | {card.dataset} | {card.steps} | {size:.2f} MiB | {headline} |")
    return 0


def _show(args: argparse.Namespace) -> int:
    from implicit_slots.pretrained import get_card, weights_path

    try:
        card = get_card(args.name)
    except KeyError as error:
        raise CommandError(str(error.args[0])) from error
    print(card.to_markdown(weights_path(args.name).stat().st_size), end="")
    return 0


def _export(args: argparse.Namespace) -> int:
    from implicit_slots.pretrained import ModelFileError, read_model_file, write_weights

    try:
        loaded = read_model_file(args.run_dir)
    except ModelFileError as error:
        raise CommandError(str(error)) from error
    try:
        path = write_weights(loaded.config, loaded.state, loaded.step, args.out)
    except (OSError, ValueError) as error:  # a full disk, or NaN/Inf parameters (never shipped)
        raise CommandError(str(error)) from error
    print(f"written: {path} ({path.stat().st_size / 2**20:.2f} MiB, step {loaded.step})")
    return 0
