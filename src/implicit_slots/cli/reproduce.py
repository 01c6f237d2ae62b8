"""``implicit-slots reproduce``: run a table or figure of the paper, aggregate over seeds, plot, report.

Usage::

    implicit-slots reproduce --list
    implicit-slots reproduce NAME [NAME ...] [--scale cpu|paper] [--seeds N] [--jobs J]
                             [--runs-dir DIR] [--out DIR] [--only GLOB ...] [--set KEY=VALUE ...]
                             [--dvae auto|joint|two-stage]

Every config of the experiment (``configs/paper/<scale>/<curve>.yaml``) is trained for each seed
(``training.seed = 0 .. N-1``) and evaluated, J subprocesses at a time with one thread each. Complete
runs are skipped, interrupted ones resumed. Then ``--out`` receives, per experiment, ``NAME.png`` (learning
curves and bars, mean ± std over seeds) and ``NAME.md`` (the results table with the paper's numbers).

A stop signal (Ctrl-C, SIGTERM, SIGUSR1) to ``reproduce`` passes SIGTERM to the running subprocesses, which
checkpoint and exit; no further run starts, no report is written, and the exit code is 4. Running the same
command again resumes.

SLATE runs train their dVAE jointly (official SLATE) or, in two-stage SLATE, start from a dVAE trained
once per (dataset, resolution, seed) and shared by every arm of that seed. Each experiment states which at
each scale; ``--dvae joint`` / ``--dvae two-stage`` forces one (its tables are then written as
``NAME_joint.md`` / ``NAME_two_stage.md`` where that is not the experiment's choice).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError, help_text

DEFAULT_RUNS_DIR = Path("runs") / "reproduce"


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` sub-command."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run a table/figure of the paper over seeds, plot it, and compare with the paper",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="experiment(s): see --list")
    parser.add_argument("--list", action="store_true", help="print the experiment names and exit")
    parser.add_argument(
        "--scale", default="cpu", choices=["cpu", "paper"], help="config scale (default: cpu)"
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per config, 0 .. N-1 (default: 2)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1)")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="run folders (default: runs/reproduce/<scale>)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="figures and tables (default: <runs-dir>/report)"
    )
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="GLOB", help="run only configs matching these patterns"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="config overrides for every run (e.g. data.root=/data/clevr-mirror training.precision=bf16)",
    )
    parser.add_argument(
        "--dvae",
        default="auto",
        choices=["auto", "joint", "two-stage"],
        help="SLATE's dVAE: each experiment's choice at the scale (auto), trained jointly, or a shared "
        "pre-trained dVAE stage (two-stage)",
    )
    parser.add_argument("--fid-weights", type=Path, default=None, help="FID Inception weights (evaluate)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="evaluation device")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands, run nothing")
    parser.add_argument("--report-only", action="store_true", help="aggregate what exists, run nothing")
    parser.add_argument(
        "--retry-diverged", action="store_true", help="train runs that stopped on NaN/Inf steps again"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code (1 when a run failed, 4 when runs were interrupted)."""
    from implicit_slots.reproduce.experiments import EXPERIMENTS, get_experiment
    from implicit_slots.reproduce.report import write_reports
    from implicit_slots.reproduce.runs import ExecutionOptions, ReproduceError, build_plan, execute_plan
    from implicit_slots.training import INTERRUPTED_EXIT_CODE
    from implicit_slots.training.logger import MetricsFileError

    if args.list:
        print(" ".join(EXPERIMENTS))
        return 0
    if not args.names:
        raise CommandError(f"give an experiment name ({' '.join(EXPERIMENTS)}) or --list")
    if args.jobs < 1:
        raise CommandError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        experiments = [get_experiment(name) for name in args.names]
    except KeyError as error:
        raise CommandError(str(error.args[0])) from error
    for item in args.overrides:
        if "=" not in item:
            raise CommandError(f"--set expects KEY=VALUE, got {item!r}")
    runs_dir = args.runs_dir if args.runs_dir is not None else DEFAULT_RUNS_DIR / args.scale
    out_dir = args.out if args.out is not None else runs_dir / "report"
    started = time.perf_counter()
    try:
        plan = build_plan(
            experiments,
            args.scale,
            args.seeds,
            runs_dir,
            overrides=args.overrides,
            only=args.only,
            dvae=args.dvae,
        )
        print(
            f"[reproduce] {len(plan)} runs ({', '.join(e.name for e in experiments)}, scale {args.scale}, "
            f"{args.seeds} seed(s), {args.jobs} at a time) in {runs_dir}"
        )
        failed = 0
        if not args.report_only:
            options = ExecutionOptions(
                jobs=args.jobs,
                fid_weights=args.fid_weights,
                device=args.device,
                logs_dir=runs_dir / "logs",
                dry_run=args.dry_run,
                retry_diverged=args.retry_diverged,
            )
            results = execute_plan(plan, options)
            failed = sum(r.status in ("train-failed", "eval-failed", "stage-failed") for r in results)
            interrupted = sum(r.status == "interrupted" for r in results)
            if interrupted and not args.dry_run:
                print(
                    f"[reproduce] {interrupted} run(s) interrupted or not started, so no report was written: "
                    "run the same command again to resume (--report-only reports what exists)"
                )
                return INTERRUPTED_EXIT_CODE
        if args.dry_run:
            return 0
        command = shlex.join(["implicit-slots", *sys.argv[1:]]) if sys.argv else ""
        written = write_reports(
            experiments,
            args.scale,
            args.seeds,
            runs_dir,
            out_dir,
            plan=plan,
            command=command,
            dvae=args.dvae,
        )
    except (ReproduceError, MetricsFileError) as error:
        raise CommandError(str(error)) from error
    minutes = (time.perf_counter() - started) / 60
    for path in written:
        print(f"written: {path}")
    print(f"[reproduce] finished in {minutes:.1f} min" + (f"; {failed} run(s) failed" if failed else ""))
    return 1 if failed else 0
