"""``implicit-slots bench train-step``: time one SLATE training step (forward + backward + Adam).

One step is what the engine does per batch: ``model.train()``, ``zero_grad``, forward, SLATE loss, backward,
inf-norm gradient clipping at 1.0 (SLATE's) and ``Adam.step`` over the two parameter groups (dVAE 3e-4,
main 1e-4). Inputs are uniform random images (two fixed batches, alternating). Each configuration warms up,
then the median of the timed steps is reported, with the ratio of each variant to vanilla at the same
iteration count. Besides wall-clock time the table gives the process CPU time per step: with one thread it
is the compute a step needs even when other processes share the cores (wall time then grows, CPU time
does not). ``--profile`` adds a torch.profiler table of one step (self CPU time by operator).

``--config FILE`` takes the SLATE sizes (``model:`` section), the batch size, the image size, the variant and
the iteration count from an experiment config instead (options given explicitly still win).

``--against-official PATH`` times official SLATE (a checkout the user provides) against ours instead: both at
official ``train.py``'s sizes, the same batch, threads and optimizer, each in its own fresh process,
alternating for ``--rounds`` rounds (:mod:`implicit_slots.benchmarks.official`); ours runs the first of
``--variants`` (default IN) at the first of ``--iterations`` (default 7, which official runs too).

Example::

    OMP_NUM_THREADS=1 implicit-slots bench train-step --batch-size 32 --iterations 7 15
    implicit-slots bench train-step --config configs/slate_clevr_lite.yaml --threads 2
    implicit-slots bench train-step --against-official ~/slate --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from implicit_slots.benchmarks import BenchmarkError
from implicit_slots.benchmarks.slate_step import make_optimizer, training_step
from implicit_slots.models.slate import Slate, SlateConfig, build_slate
from implicit_slots.models.speed import compile_model

DESCRIPTION = "time one SLATE training step (forward + backward + Adam) for slot-attention variants"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument(
        "--config", type=Path, default=None, help="experiment YAML of a SLATE model to time (see above)"
    )
    parser.add_argument(
        "--variants", nargs="+", default=None, help="slot-attention variants (default: vanilla IN)"
    )
    parser.add_argument(
        "--iterations", nargs="+", type=int, default=None, help="slot-attention iterations (default: 7 15)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32")
    parser.add_argument("--image-size", type=int, default=None, help="default: 64")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument(
        "--model",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override SlateConfig fields (numbers only), e.g. d_model=128 dropout=0 attention_dropout=0",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one step of the first configuration"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile each model first (models.speed.compile_model, inductor); warm-up steps include it",
    )
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument(
        "--against-official",
        type=Path,
        default=None,
        metavar="PATH",
        help="compare with official SLATE checked out at PATH (separate processes, alternating)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the official comparison")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="official comparison: both processes keep freed memory (glibc mallopt; models/speed.py)",
    )


def _parse_overrides(items: Sequence[str]) -> dict[str, float | int]:
    """``["d_model=128", "dropout=0"]`` -> ``{"d_model": 128, "dropout": 0.0}`` (SlateConfig fields)."""
    fields = {f.name: f for f in dataclasses.fields(SlateConfig) if f.name != "slot_attention"}
    overrides: dict[str, float | int] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--model {item!r}: expected FIELD=VALUE with FIELD in {sorted(fields)}")
        default = getattr(SlateConfig(), name)
        overrides[name] = type(default)(float(text)) if isinstance(default, int) else float(text)
    return overrides


def build_benchmark_model(
    variant: str,
    num_iterations: int,
    image_size: int,
    overrides: dict[str, float | int],
    base: SlateConfig | None = None,
) -> Slate:
    """A SLATE model with ``base``'s sizes (default: SlateConfig()) except the given variant, iterations,
    image size and overrides."""
    base = base or SlateConfig()
    slot_attention = dataclasses.replace(base.slot_attention, variant=variant, num_iterations=num_iterations)
    config = dataclasses.replace(base, image_size=image_size, slot_attention=slot_attention)
    for name, value in overrides.items():
        setattr(config, name, value)
    return build_slate(config)


def time_configuration(
    variant: str,
    num_iterations: int,
    batch_size: int,
    image_size: int,
    overrides: dict[str, float | int],
    warmup: int,
    steps: int,
    base: SlateConfig | None = None,
    compile_backend: str | None = None,
) -> tuple[list[float], list[float]]:
    """(wall, process CPU) milliseconds of each timed training step of one configuration.

    ``compile_backend``: compile the model first (:func:`implicit_slots.models.speed.compile_model`).
    """
    torch.manual_seed(0)
    model = build_benchmark_model(variant, num_iterations, image_size, overrides, base).train()
    if compile_backend is not None:
        compile_model(model, backend=compile_backend)
    optimizer, parameters = make_optimizer(model)
    images = [torch.rand(batch_size, 3, image_size, image_size) for _ in range(2)]
    wall, cpu = [], []
    for index in range(warmup + steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        training_step(model, optimizer, parameters, images[index % 2])
        if index >= warmup:
            wall.append((time.perf_counter() - start) * 1000.0)
            cpu.append((time.process_time() - start_cpu) * 1000.0)
    return wall, cpu


def profile_step(
    variant: str,
    num_iterations: int,
    batch_size: int,
    image_size: int,
    overrides: dict[str, float | int],
    rows: int,
    base: SlateConfig | None = None,
) -> str:
    """A torch.profiler table (self CPU time by operator) of one training step after two warm-up steps."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = build_benchmark_model(variant, num_iterations, image_size, overrides, base).train()
    optimizer, parameters = make_optimizer(model)
    image = torch.rand(batch_size, 3, image_size, image_size)
    for _ in range(2):
        training_step(model, optimizer, parameters, image)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        training_step(model, optimizer, parameters, image)
    table: str = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return table


def _config_defaults(path: Path) -> tuple[SlateConfig, int, int]:
    """(SLATE config, batch size, image size) of an experiment config; BenchmarkError when it is not SLATE."""
    from implicit_slots.config import ConfigError, load_config

    if not path.is_file():
        raise BenchmarkError(f"config file {str(path)!r} does not exist")
    try:
        config = load_config(path)
    except ConfigError as error:
        raise BenchmarkError(str(error)) from error
    if not isinstance(config.model.config, SlateConfig):
        raise BenchmarkError(f"{str(path)!r} configures model {config.model.name!r}; train-step times SLATE")
    return config.model.config, config.training.batch_size, config.model.config.image_size


def run(args: argparse.Namespace) -> int:
    """Time every (variant, iterations) pair and print a Markdown table."""
    if args.against_official is not None:
        return run_against_official(args)
    torch.set_num_threads(args.threads)
    try:
        overrides = _parse_overrides(args.model)
    except ValueError as error:
        raise BenchmarkError(str(error)) from error
    base, batch_size, image_size = SlateConfig(), 32, 64
    variants, iterations = ["vanilla", "IN"], [7, 15]
    if args.config is not None:
        base, batch_size, image_size = _config_defaults(args.config)
        variants, iterations = [base.slot_attention.variant], [base.slot_attention.num_iterations]
    batch_size = args.batch_size or batch_size
    image_size = args.image_size or image_size
    variants, iterations = args.variants or variants, args.iterations or iterations
    print(
        f"SLATE training step{f' of {args.config}' if args.config else ''}: batch {batch_size}, "
        f"{image_size}x{image_size}, {args.threads} thread(s), {args.warmup} warm-up + {args.steps} timed "
        f"steps, overrides {overrides or 'none'}{', compiled (inductor)' if args.compile else ''}"
    )
    print()
    print(
        "| variant | iterations | median ms/step | min-max ms | CPU ms/step | ratio to vanilla (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|")
    medians: dict[tuple[str, int], tuple[float, float]] = {}
    for num_iterations in iterations:
        for variant in variants:
            wall, cpu = time_configuration(
                variant,
                num_iterations,
                batch_size,
                image_size,
                overrides,
                args.warmup,
                args.steps,
                base,
                "inductor" if args.compile else None,
            )
            median, median_cpu = statistics.median(wall), statistics.median(cpu)
            medians[(variant, num_iterations)] = (median, median_cpu)
            vanilla = medians.get(("vanilla", num_iterations))
            ratio = f"{median / vanilla[0]:.3f} / {median_cpu / vanilla[1]:.3f}" if vanilla else "-"
            spread = f"{min(wall):.0f}-{max(wall):.0f}"
            print(f"| {variant} | {num_iterations} | {median:.0f} | {spread} | {median_cpu:.0f} | {ratio} |")
    if args.profile:
        variant, num_iterations = variants[0], iterations[0]
        print()
        print(f"Profile of one step ({variant}, {num_iterations} iterations):")
        print(
            profile_step(variant, num_iterations, batch_size, image_size, overrides, args.profile_rows, base)
        )
    return 0


def run_against_official(args: argparse.Namespace) -> int:
    """Official SLATE against ours, alternating fresh processes; prints both medians and the ratio."""
    from implicit_slots.benchmarks import official

    if args.config is not None or args.model:
        raise BenchmarkError("--against-official compares official train.py sizes; drop --config / --model")
    try:
        checkout = official.check_checkout(args.against_official)
    except ValueError as error:
        raise BenchmarkError(str(error)) from error
    variant = (args.variants or ["IN"])[0]
    iterations = (args.iterations or [7])[0]
    options: dict[str, object] = {
        "image_size": args.image_size or 64,
        "batch_size": args.batch_size or 32,
        "iterations": iterations,
        "variant": variant,
        "threads": args.threads,
        "warmup": args.warmup,
        "steps": args.steps,
        "keep_freed_memory": int(args.keep_freed_memory),
    }
    print(
        f"SLATE training step, official ({checkout}, vanilla) vs ours ({variant}): {iterations} iterations, "
        f"batch {options['batch_size']}, {options['image_size']}x{options['image_size']}, {args.threads} "
        f"thread(s), {args.warmup} warm-up + {args.steps} timed steps per process, {args.rounds} round(s), "
        f"freed memory {'kept (both)' if args.keep_freed_memory else 'returned (glibc default)'}; "
        f"{official.describe_load()}"
    )
    try:
        comparison = official.compare("train-step", checkout, options, args.rounds)
    except RuntimeError as error:
        raise BenchmarkError(str(error)) from error
    print()
    print(official.format_comparison(comparison, "per step"))
    print(f"after: {official.describe_load()}")
    return 0
