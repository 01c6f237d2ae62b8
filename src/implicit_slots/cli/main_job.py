"""``implicit-slots main-job`` (what ``make run`` runs): train implicit SLATE, evaluate it, report.

Train the default config (implicit SLATE, IN variant, 7 iterations, ``clevr-lite`` 64x64, sized for a
2-core CPU) into a run folder, evaluate the last checkpoint on the test split, and print the run
folder, the key metrics and the figure paths. Re-running continues an interrupted run (``--resume``
semantics) and skips training that already finished. Exit codes as ``implicit-slots train``: 0 done,
2 bad command line or config, 3 training stopped by NaN/Inf steps, 4 interrupted by a stop signal
(checkpointed; run again to resume).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from implicit_slots.cli import CommandError, help_text

DEFAULT_CONFIG_NAME = "slate_clevr_lite.yaml"  # in the package's configs folder (config.CONFIGS_DIR)
KEY_METRICS = (
    "mse_autoregressive",
    "mse_autoregressive_sampled",
    "mse_dvae",
    "cross_entropy",
    "slot_information",
    "fg_ari_attention",
    "fid",
    "proxy_feature_distance",
    "num_images",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "main-job",
        help="train + evaluate the default implicit SLATE (what `make run` runs)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"experiment YAML (default: the packaged configs/{DEFAULT_CONFIG_NAME})",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/main-job"), help="run folder")
    parser.add_argument("--eval-images", type=int, default=64, help="test images to evaluate")
    parser.add_argument("--fid-weights", type=Path, default=None, help="FID Inception weights file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from implicit_slots.config import CONFIGS_DIR, ConfigError, load_config
    from implicit_slots.evaluation.runner import EvaluationRunError, evaluate_run
    from implicit_slots.training.checkpoint import load_checkpoint
    from implicit_slots.training.loop import (
        CHECKPOINT_NAME,
        DIVERGED_EXIT_CODE,
        INTERRUPTED_EXIT_CODE,
        CheckpointWriteError,
        TrainingDivergedError,
        TrainingSetupError,
        train,
    )

    config_path: Path = args.config if args.config is not None else CONFIGS_DIR / DEFAULT_CONFIG_NAME
    if not config_path.is_file():
        raise CommandError(f"config file {str(config_path)!r} does not exist")
    try:
        config = load_config(config_path, args.overrides)
    except ConfigError as error:
        raise CommandError(str(error)) from error
    run_dir: Path = args.run_dir
    checkpoint = run_dir / CHECKPOINT_NAME
    try:
        done_steps = (
            int(load_checkpoint(checkpoint, map_location="cpu")["step"]) if checkpoint.exists() else 0
        )
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(f"{error}; move the run folder away or pass another --run-dir") from error
    started = time.perf_counter()
    if done_steps >= config.training.max_steps:
        print(f"[main-job] {run_dir} already trained for {done_steps} steps; skipping training")
    else:
        resume = checkpoint.is_file()
        print(
            f"[main-job] {'resuming' if resume else 'training'} {config.model.name} on {config.data.name} "
            f"for {config.training.max_steps} steps -> {run_dir}"
        )
        try:
            result = train(config, run_dir, resume=resume, command=shlex.join(sys.argv))
        except TrainingSetupError as error:
            raise CommandError(str(error)) from error
        except TrainingDivergedError as error:
            print(f"implicit-slots main-job: error: {error}", file=sys.stderr)
            return DIVERGED_EXIT_CODE
        except CheckpointWriteError as error:
            print(f"implicit-slots main-job: error: {error}", file=sys.stderr)
            return 1
        if result.status != "completed":
            print(f"[main-job] training interrupted at step {result.step}; run `make run` again to resume")
            return INTERRUPTED_EXIT_CODE
    print(f"[main-job] evaluating on the test split ({args.eval_images} images)")
    try:
        evaluation = evaluate_run(run_dir, "test", fid_weights=args.fid_weights, max_images=args.eval_images)
    except EvaluationRunError as error:
        raise CommandError(str(error)) from error
    minutes = (time.perf_counter() - started) / 60
    print()
    print(f"run folder : {run_dir.resolve()}")
    print(f"checkpoint : step {evaluation.checkpoint_step} ({minutes:.1f} min this invocation)")
    print(f"metrics    : {evaluation.path}")
    for name in KEY_METRICS:
        if name in evaluation.metrics:
            print(f"  {name:<27} {evaluation.metrics[name]:.4g}")
    for figure in evaluation.figures:
        print(f"figure     : {figure}")
    print(f"tensorboard: tensorboard --logdir {run_dir}")
    return 0
