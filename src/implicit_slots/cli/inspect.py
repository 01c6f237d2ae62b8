"""``implicit-slots inspect``: diagnostics of a trained run that print a table (they write nothing).

Usage::

    implicit-slots inspect onset RUN_DIR [--split test] [--images 64] [--background-codes 3] [--batch-size 16]
    implicit-slots inspect gradients RUN_DIR [--split test] [--images 16] [--batch-size 16]
        [--budgets 7 30 100] [--reference-iterations 100] [--seed 0] [--device cpu]

``onset`` (SLATE runs): the decoder's background probability at the object onsets and what greedy decoding
writes there (see :mod:`implicit_slots.evaluation.onset`).

``gradients`` (any model): the gradient of the training loss w.r.t. the slot-attention parameters under the
run's own solver and estimator, unrolled, first-order Neumann and IFT at several forward and backward
budgets, each compared with the IFT gradient at a converged forward and backward solve: residuals reached,
cosine similarity, norm ratio, time (see :mod:`implicit_slots.evaluation.gradient_estimators`). The row
``broyden N + neumann N`` (N = ``--reference-iterations``) cross-checks the reference by plain
back-propagation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from implicit_slots.cli import CommandError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from implicit_slots.config import ExperimentConfig


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

    gradients = diagnostics.add_parser(
        "gradients",
        help="slot-attention gradients of each estimator and budget against a converged implicit gradient",
        description="The gradient of the run's training loss w.r.t. the slot-attention parameters under "
        "the run's own setting, unrolled, first-order Neumann and IFT (Broyden backward) at each budget, "
        "compared with the IFT gradient at a converged forward and backward Broyden solve. Every row sees "
        "the same initial slots and random draws.",
    )
    gradients.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="run folder written by `implicit-slots train`"
    )
    gradients.add_argument("--split", default="test", help="dataset split (default: test)")
    gradients.add_argument("--images", type=int, default=16, help="the first N images of the split (16)")
    gradients.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    gradients.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[7, 30, 100],
        metavar="N",
        help="forward and backward iteration budgets of the compared rows (default: 7 30 100)",
    )
    gradients.add_argument(
        "--reference-iterations",
        type=int,
        default=100,
        help="forward and backward Broyden iterations of the reference gradient (default 100)",
    )
    gradients.add_argument(
        "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device (default: cpu)"
    )
    gradients.add_argument("--seed", type=int, default=0, help="seed of the random draws (default 0)")
    gradients.set_defaults(func=run_gradients)


def _load_run(
    args: argparse.Namespace, positive: tuple[str, ...]
) -> tuple[Any, ExperimentConfig, int, Dataset, torch.device]:
    """Check that the ``positive`` options are >= 1, load the trained run and build its ``--split``.

    Returns:
        ``(model, config, step, dataset, device)``; every failure is one :class:`CommandError`.
    """
    from implicit_slots.evaluation.runner import EvaluationRunError, load_trained_model
    from implicit_slots.training.data import build_dataset_split
    from implicit_slots.training.distributed import resolve_device

    for name in positive:
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        device = resolve_device(args.device)
        model, config, step = load_trained_model(args.run_dir, device)
    except (EvaluationRunError, ValueError) as error:
        raise CommandError(str(error)) from error
    try:
        dataset = build_dataset_split(config.data, args.split)
    except (KeyError, ValueError) as error:
        raise CommandError(f"{args.run_dir}: {error}") from error
    return model, config, step, dataset, device


def run_onset(args: argparse.Namespace) -> int:
    """Run ``inspect onset``; returns the exit code."""
    import torch

    from implicit_slots.evaluation.onset import format_onset_table, measure_onsets

    model, config, step, dataset, device = _load_run(args, ("images", "background_codes", "batch_size"))
    if config.model.name != "slate":
        raise CommandError(f"{str(args.run_dir)!r} holds a {config.model.name!r} run, not a SLATE one")
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


def run_gradients(args: argparse.Namespace) -> int:
    """Run ``inspect gradients``; returns the exit code."""
    from implicit_slots.evaluation.gradient_estimators import (
        GradientSetting,
        compare_gradients,
        default_settings,
        describe,
        format_gradient_table,
    )
    from implicit_slots.training.data import collate
    from implicit_slots.training.schedules import hyperparameter_values

    if min(args.budgets) < 1:
        raise CommandError(f"--budgets must all be >= 1, got {args.budgets}")
    model, config, step, dataset, device = _load_run(args, ("images", "batch_size", "reference_iterations"))
    # The scheduled hyperparameters (e.g. SLATE's Gumbel temperature) take their value at the checkpoint.
    model.set_hyperparameters(hyperparameter_values(config.training.hyperparameter_schedules, step))
    count = min(args.images, len(dataset))  # type: ignore[arg-type]
    batches = [
        {key: value.to(device) for key, value in collate([dataset[i] for i in range(start, end)]).items()}
        for start in range(0, count, args.batch_size)
        for end in [min(start + args.batch_size, count)]
    ]
    module = model.slot_attention
    own = ("run: " + describe(module.solver, module.gradient), module.solver, module.gradient)
    iterations = args.reference_iterations
    reference = GradientSetting("broyden", iterations, "ift", iterations).build()
    # The reference's cross-check by plain back-propagation: n differentiable steps from the same fixed point
    # sum n terms of the Neumann series, which tend to the IFT gradient where the map contracts there.
    check = GradientSetting("broyden", iterations, "neumann", neumann_order=iterations)
    rows = [check, *default_settings(args.budgets)]
    settings = [own, *((setting.describe(), *setting.build()) for setting in rows)]
    report = compare_gradients(model, batches, settings, reference, seed=args.seed)
    variant = module.variant
    print(
        f"{args.run_dir} (step {step}, {config.model.name} {variant}, {args.split}, {report.images} images, "
        f"{report.parameters} slot-attention parameters, seed {args.seed})"
    )
    for line in format_gradient_table(report):
        print(line)
    return 0
