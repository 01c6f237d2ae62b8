"""``implicit-slots inspect``: diagnostics of a trained run that print a table (they write nothing).

Usage::

    implicit-slots inspect onset RUN_DIR [--split test] [--images 64] [--background-codes 3] [--batch-size 16]

``onset`` (SLATE runs): the decoder's background probability at the object onsets and what greedy decoding
writes there (see :mod:`implicit_slots.evaluation.onset`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError


def register(subparsers: Any) -> None:
    """Add ``inspect`` and its diagnostics."""
    parser = subparsers.add_parser("inspect", help="diagnostics of a trained run (print a table)")
    diagnostics = parser.add_subparsers(dest="diagnostic", metavar="DIAGNOSTIC", required=True)
    onset = diagnostics.add_parser(
        "onset",
        help="SLATE: background probability at object onsets, and greedy decoding's object recall",
        description="Why greedy SLATE reconstructions stay empty: the teacher-forced decoder's background "
        "probability where objects start, and how much of the objects greedy decoding writes.",
    )
    onset.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="SLATE run folder written by `implicit-slots train`"
    )
    onset.add_argument("--split", default="test", help="dataset split (default: test)")
    onset.add_argument("--images", type=int, default=64, help="the first N images of the split (default 64)")
    onset.add_argument(
        "--background-codes", type=int, default=3, help="the N most frequent codes count as background (3)"
    )
    onset.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    onset.add_argument(
        "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device (default: cpu)"
    )
    onset.add_argument("--seed", type=int, default=0, help="seed of the slot initialisations (default 0)")
    onset.set_defaults(func=run_onset)


def run_onset(args: argparse.Namespace) -> int:
    """Run ``inspect onset``; returns the exit code."""
    import torch

    from implicit_slots.evaluation.onset import format_onset_table, measure_onsets
    from implicit_slots.evaluation.runner import EvaluationRunError, load_trained_model
    from implicit_slots.training.data import build_dataset_split
    from implicit_slots.training.distributed import resolve_device

    for name in ("images", "background_codes", "batch_size"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        device = resolve_device(args.device)
        model, config, step = load_trained_model(args.run_dir, device)
    except (EvaluationRunError, ValueError) as error:
        raise CommandError(str(error)) from error
    if config.model.name != "slate":
        raise CommandError(f"{str(args.run_dir)!r} holds a {config.model.name!r} run, not a SLATE one")
    dataset = build_dataset_split(config.data, args.split)
    count = min(args.images, len(dataset))  # type: ignore[arg-type]
    batches = [
        torch.stack([dataset[i]["image"] for i in range(start, min(start + args.batch_size, count))]).to(
            device
        )
        for start in range(0, count, args.batch_size)
    ]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    try:
        report = measure_onsets(model, batches, background_codes=args.background_codes, generator=generator)
    except ValueError as error:
        raise CommandError(f"{args.run_dir}: {error}") from error
    codes = args.background_codes
    print(f"{args.run_dir} (step {step}, {args.split}, {report.images} images, {codes} background codes)")
    for line in format_onset_table(report):
        print(line)
    return 0
