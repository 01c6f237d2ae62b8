"""``implicit-slots main-job`` (what ``make run`` runs): train implicit SLATE, evaluate it, report.

Train the default config (implicit SLATE, IN variant, 7 iterations, ``clevr-lite`` 64x64, sized for a
2-core CPU) into a run folder, evaluate the last checkpoint on the test split, and print the run
folder, the key metrics and the figure paths.

``--dvae-config`` trains a dVAE stage first (two-stage SLATE): that config (e.g.
``configs/dvae_clevr_lite.yaml``) into ``RUN_DIR/dvae``, then the SLATE config with ``model.dvae_init``
set to that folder (e.g. ``configs/slate_clevr_lite_two_stage.yaml``, which freezes it). Overrides apply to
the SLATE config; those of ``training.seed``, ``training.num_threads``, ``training.device``,
``training.precision`` and ``data.*`` apply to the dVAE stage too, so both stages see the same data and
seed.

Re-running continues an interrupted run (``--resume`` semantics, stage by stage) and skips training that
already finished. A run folder that holds a run of another config is refused before anything trains (one
error naming the differing keys); threads, device, logging, checkpoint cadence, diagnostics and data
workers may change between runs. Exit codes as ``implicit-slots train``: 0 done, 2 bad command line or
config, 3 training stopped by NaN/Inf steps, 4 interrupted by a stop signal (checkpointed; run again to
resume).

The process keeps freed memory (:func:`implicit_slots.models.speed.keep_freed_memory`): nothing computed
changes, the page faults of every step's large temporaries go away.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from implicit_slots.cli import CommandError, help_text

if TYPE_CHECKING:
    from implicit_slots.config import ExperimentConfig

DEFAULT_CONFIG_NAME = "slate_clevr_lite.yaml"  # in the package's configs folder (config.CONFIGS_DIR)
DVAE_STAGE_DIR = "dvae"  # the dVAE stage's folder inside the run folder
# Overrides that concern both stages: the same seed, data, threads, device and precision for both.
SHARED_OVERRIDE_KEYS = ("training.seed", "training.num_threads", "training.device", "training.precision")
SHARED_OVERRIDE_PREFIXES = ("data.",)
# How a run executes, logs and is budgeted, not what it trains: a re-run may change them (as `train --resume`
# may), so they do not make a run folder "another config".
RUN_SETTING_KEYS = (
    "provenance",
    "training.max_steps",
    "training.num_threads",
    "training.device",
    "training.log_every",
    "training.checkpoint_every",
    "training.validation",
    "training.ddp_find_unused_parameters",
    "data.num_workers",
    "data.cache_dir",
    "diagnostics",
)
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
    parser.add_argument(
        "--dvae-config",
        type=Path,
        default=None,
        help=f"config of a dVAE stage to train first into RUN_DIR/{DVAE_STAGE_DIR} (two-stage SLATE)",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/main-job"), help="run folder")
    parser.add_argument("--eval-images", type=int, default=64, help="test images to evaluate")
    parser.add_argument("--fid-weights", type=Path, default=None, help="FID Inception weights file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def shared_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that also apply to the dVAE stage (seed, threads, device, precision, data)."""
    shared = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in SHARED_OVERRIDE_KEYS or key.startswith(SHARED_OVERRIDE_PREFIXES):
            shared.append(item)
    return shared


def _load(path: Path, overrides: Sequence[str]) -> ExperimentConfig:
    from implicit_slots.config import ConfigError, load_config

    if not path.is_file():
        raise CommandError(f"config file {str(path)!r} does not exist")
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        raise CommandError(str(error)) from error


def _trained_steps(run_dir: Path) -> int:
    """The step of ``run_dir``'s last checkpoint (0 without one); CommandError when it is unreadable."""
    from implicit_slots.training.checkpoint import load_checkpoint
    from implicit_slots.training.loop import CHECKPOINT_NAME

    checkpoint = run_dir / CHECKPOINT_NAME
    try:
        return int(load_checkpoint(checkpoint, map_location="cpu")["step"]) if checkpoint.exists() else 0
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(f"{error}; move the run folder away or pass another --run-dir") from error


def _check_same_config(config: ExperimentConfig, run_dir: Path, what: str) -> None:
    """A run folder with a checkpoint must hold a run of the same config (:data:`RUN_SETTING_KEYS` aside):
    resuming or skipping it would otherwise report another model as this one."""
    from implicit_slots.config import ConfigError, config_differences, describe_keys, load_config
    from implicit_slots.training.loop import CHECKPOINT_NAME

    saved = run_dir / "config.yaml"
    if not (run_dir / CHECKPOINT_NAME).is_file() or not saved.is_file():
        return
    try:
        differences = config_differences(load_config(saved), config, ignore=RUN_SETTING_KEYS)
    except ConfigError as error:
        raise CommandError(f"{saved}: {error}") from error
    if differences:
        raise CommandError(
            f"{run_dir} holds {what} trained with another config (it differs in "
            f"{describe_keys(differences)}); "
            "pass another --run-dir or move that folder away"
        )


def _train_stage(config: ExperimentConfig, run_dir: Path, what: str) -> int | None:
    """Train ``config`` into ``run_dir`` (resuming, or skipping a finished run); an exit code to stop with,
    None when the stage is trained."""
    from implicit_slots.cli.train import data_read_error_message
    from implicit_slots.data import ImageReadError
    from implicit_slots.training.loop import (
        CHECKPOINT_NAME,
        DIVERGED_EXIT_CODE,
        INTERRUPTED_EXIT_CODE,
        CheckpointWriteError,
        TrainingDivergedError,
        TrainingSetupError,
        train,
    )

    done_steps = _trained_steps(run_dir)
    if done_steps >= config.training.max_steps:
        print(f"[main-job] {run_dir} already trained for {done_steps} steps; skipping {what}")
        return None
    resume = (run_dir / CHECKPOINT_NAME).is_file()
    cpu_started = time.process_time()
    print(
        f"[main-job] {'resuming' if resume else 'training'} {what}: {config.model.name} on "
        f"{config.data.name} for {config.training.max_steps} steps -> {run_dir}"
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
    except ImageReadError as error:  # a damaged file of a folder dataset (data.* overrides)
        print(f"implicit-slots main-job: error: {data_read_error_message(error, run_dir)}", file=sys.stderr)
        return 1
    if result.status != "completed":
        print(f"[main-job] training interrupted at step {result.step}; run `make run` again to resume")
        return INTERRUPTED_EXIT_CODE
    print(f"[main-job] {what} trained ({time.process_time() - cpu_started:.0f} s of process CPU time)")
    return None


def run(args: argparse.Namespace) -> int:
    from implicit_slots.config import CONFIGS_DIR
    from implicit_slots.evaluation.runner import EvaluationRunError, evaluate_run
    from implicit_slots.models.speed import keep_freed_memory

    # glibc keeps freed blocks for reuse instead of mapping them again every step: bit-identical results
    # without the page faults, about 4% of the main job's CPU time (models/speed.py; docs/slate.md).
    keep_freed_memory()
    config_path: Path = args.config if args.config is not None else CONFIGS_DIR / DEFAULT_CONFIG_NAME
    dvae_config_path: Path | None = args.dvae_config
    run_dir: Path = args.run_dir
    overrides: list[str] = list(args.overrides)
    dvae_config = None
    if dvae_config_path is not None:
        dvae_config = _load(dvae_config_path, shared_overrides(overrides))
        # The SLATE stage reads the dVAE stage's weights (an absolute path: the run folder's config.yaml
        # names it, and evaluation may run from another folder); the user's overrides come after it.
        overrides = [f"model.dvae_init={(run_dir / DVAE_STAGE_DIR).resolve()}", *overrides]
    config = _load(config_path, overrides)
    if dvae_config is not None and config.model.name != "slate":
        raise CommandError(
            f"--dvae-config needs a 'slate' config, {str(config_path)!r} is {config.model.name!r}"
        )
    # An unreadable checkpoint or a folder of another config stops the job before any stage trains.
    if dvae_config is not None:
        _trained_steps(run_dir / DVAE_STAGE_DIR)
        _check_same_config(dvae_config, run_dir / DVAE_STAGE_DIR, "a dVAE stage")
    _trained_steps(run_dir)
    _check_same_config(config, run_dir, "a run")
    started, cpu_started = time.perf_counter(), time.process_time()
    if dvae_config is not None:
        stopped = _train_stage(dvae_config, run_dir / DVAE_STAGE_DIR, "the dVAE stage")
        if stopped is not None:
            return stopped
    stopped = _train_stage(config, run_dir, "SLATE" if dvae_config is not None else "the model")
    if stopped is not None:
        return stopped
    print(f"[main-job] evaluating on the test split ({args.eval_images} images)")
    try:
        evaluation = evaluate_run(run_dir, "test", fid_weights=args.fid_weights, max_images=args.eval_images)
    except EvaluationRunError as error:
        raise CommandError(str(error)) from error
    minutes = (time.perf_counter() - started) / 60
    cpu_minutes = (time.process_time() - cpu_started) / 60
    print()
    print(f"run folder : {run_dir.resolve()}")
    print(
        f"checkpoint : step {evaluation.checkpoint_step} "
        f"({minutes:.1f} min, {cpu_minutes:.1f} CPU-min this invocation)"
    )
    print(f"metrics    : {evaluation.path}")
    for name in KEY_METRICS:
        if name in evaluation.metrics:
            print(f"  {name:<27} {evaluation.metrics[name]:.4g}")
    for figure in evaluation.figures:
        print(f"figure     : {figure}")
    print(f"tensorboard: tensorboard --logdir {run_dir}")
    return 0
