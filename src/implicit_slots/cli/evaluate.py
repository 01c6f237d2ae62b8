"""``implicit-slots evaluate``: evaluate a run's last checkpoint and write RUN_DIR/eval/metrics.json.

Usage::

    implicit-slots evaluate RUN_DIR [--split test] [--fid-weights PATH] [--max-images N] [--batch-size B]
    implicit-slots evaluate --pretrained NAME [--out DIR] [...]   # a shipped model; DIR/metrics.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run (writes RUN_DIR/eval/metrics.json)",
        description="Evaluate the last checkpoint of a run folder with its model's evaluator.",
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        nargs="?",
        default=None,
        help="run folder written by `implicit-slots train`",
    )
    parser.add_argument(
        "--pretrained",
        metavar="NAME",
        default=None,
        help="evaluate a shipped model (`implicit-slots pretrained list`) or a weights file instead of a run",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --pretrained: folder for metrics.json and figures (default: ./eval-NAME)",
    )
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--fid-weights", type=Path, default=None, help="standard FID Inception weights file")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate at most N images")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the run's)")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: auto)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="evaluation seed (default: the run's training seed)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from implicit_slots.evaluation.runner import EvaluationRunError, evaluate_pretrained, evaluate_run

    for name in ("max_images", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if (args.run_dir is None) == (args.pretrained is None):
        raise CommandError("give either RUN_DIR or --pretrained NAME")
    if args.out is not None and args.pretrained is None:
        raise CommandError("--out is for --pretrained; a run is evaluated into RUN_DIR/eval")
    try:
        if args.pretrained is not None:
            out = args.out if args.out is not None else Path(f"eval-{Path(args.pretrained).stem}")
            if out.exists() and not out.is_dir():
                raise CommandError(
                    f"--out {str(out)!r} is a file; give a folder for metrics.json and figures"
                )
            result = evaluate_pretrained(
                args.pretrained,
                out,
                args.split,
                fid_weights=args.fid_weights,
                max_images=args.max_images,
                batch_size=args.batch_size,
                device=args.device,
                seed=args.seed,
            )
        else:
            result = evaluate_run(
                args.run_dir,
                args.split,
                fid_weights=args.fid_weights,
                max_images=args.max_images,
                batch_size=args.batch_size,
                device=args.device,
                seed=args.seed,
            )
    except EvaluationRunError as error:
        raise CommandError(str(error)) from error
    print(f"| metric ({result.split}, step {result.checkpoint_step}) | value |")
    print("|---|---|")
    for name, value in result.metrics.items():
        print(f"| {name} | {value:.6g} |")
    print(f"\nwritten: {result.path}")
    return 0
