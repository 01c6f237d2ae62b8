"""``implicit-slots bench data``: images per second of the procedural datasets, one thread.

Each cell renders ``--images`` consecutive samples of the train split in the main process (as on-the-fly
training does) after one warm-up sample. It reports images/s from the process's CPU time (robust when
other jobs share the machine) and from the wall clock, and CPU milliseconds per image.
"""

from __future__ import annotations

import argparse
import time

import torch

DESCRIPTION = "images/s of the procedural datasets per size and anti-aliasing (one thread)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmark."""
    parser.add_argument(
        "--datasets", nargs="+", default=["clevr-lite", "clevr-mirror-lite", "sprites", "tetrominoes"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128])
    parser.add_argument("--antialias", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--images", type=int, default=100, help="images per cell")
    parser.add_argument(
        "--max-objects", type=int, default=None, help="override max_objects (clevr-lite only)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the Markdown table."""
    from implicit_slots.data import build_dataset

    torch.set_num_threads(1)
    print("| dataset | size | anti-aliasing | images/s (CPU time) | images/s (wall) | ms/image (CPU) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        for size in args.sizes:
            for antialias in args.antialias:
                options = {"antialias": antialias}
                if args.max_objects is not None and name.startswith("clevr"):
                    options["max_objects"] = args.max_objects
                dataset = build_dataset(name, "train", size, 0, num_samples=args.images + 1, **options)
                dataset[args.images]  # warm-up (caches, imports)
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                for index in range(args.images):
                    dataset[index]
                cpu = time.process_time() - start_cpu
                wall = time.perf_counter() - start_wall
                print(
                    f"| {name} | {size}x{size} | {antialias}x{antialias} | {args.images / cpu:.0f} | "
                    f"{args.images / wall:.0f} | {1000 * cpu / args.images:.2f} |",
                    flush=True,
                )
    return 0
