"""``implicit-slots data``: look at a dataset, or write a cached copy of it.

Usage::

    implicit-slots data list
    implicit-slots data preview NAME [--root DIR] --out grid.png [--count 8] [--option KEY=VALUE ...]
    implicit-slots data materialise NAME --count N --out DIR [--split train] [--option KEY=VALUE ...]

``preview`` writes a PNG grid: the images in the first row and, for datasets with masks, each image's
object masks (one colour per object, background black) in the second row. ``materialise`` writes the
cache entry that ``build_dataset(NAME, ..., num_samples=N, cache_dir=DIR, **options)`` then reads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from implicit_slots.cli import CommandError, help_text

# Mask colours: background black, then well-separated hues.
_PALETTE = np.array(
    [
        (0, 0, 0),
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
    ],
    np.uint8,
)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["antialias=2", "mirror=true"]`` -> ``{"antialias": 2, "mirror": True}`` (values parsed as YAML)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    return options


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="dataset name (see `implicit-slots data list`)")
    parser.add_argument("--root", type=Path, default=None, help="folder of a real dataset")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="dataset option (repeatable), e.g. antialias=2"
    )


def register(subparsers: Any) -> None:
    """Add ``data`` with its ``list``, ``preview`` and ``materialise`` sub-commands."""
    parser = subparsers.add_parser(
        "data",
        help="list, preview or materialise datasets",
        description=help_text(__doc__, first_paragraph=True),
    )
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="list the registered datasets")
    listing.set_defaults(func=run_list)
    preview = commands.add_parser("preview", help="write a PNG grid of images and masks")
    _common_arguments(preview)
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.add_argument("--count", type=int, default=8, help="number of samples (columns)")
    preview.set_defaults(func=run_preview)
    materialise = commands.add_parser("materialise", help="write a cached copy of a dataset split")
    _common_arguments(materialise)
    materialise.add_argument("--out", type=Path, required=True, help="cache folder (the cache_dir option)")
    materialise.add_argument("--count", type=int, required=True, help="number of samples (num_samples)")
    materialise.set_defaults(func=run_materialise)


def _build(args: argparse.Namespace, num_samples: int | None) -> Any:
    from implicit_slots.data import build_dataset

    try:
        return build_dataset(
            args.name,
            args.split,
            args.image_size,
            args.seed,
            root=args.root,
            num_samples=num_samples,
            **parse_options(args.option),
        )
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise CommandError(str(message)) from None


def run_list(args: argparse.Namespace) -> int:
    """Print every dataset with its description."""
    from implicit_slots.data import available_datasets, get_dataset_spec

    for name in available_datasets():
        spec = get_dataset_spec(name)
        print(f"{name:22s} {'(needs --root) ' if spec.needs_root else ''}{spec.description}")
    return 0


def preview_grid(samples: list[dict[str, Any]]) -> np.ndarray:
    """uint8 ``(rows * S, count * S, 3)``: images, then coloured masks when the samples have them."""
    images = [np.round(s["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for s in samples]
    rows = [np.concatenate(images, axis=1)]
    if "masks" in samples[0]:
        labels = [s["masks"].numpy().argmax(axis=0) for s in samples]
        rows.append(np.concatenate([_PALETTE[label % len(_PALETTE)] for label in labels], axis=1))
    return np.concatenate(rows, axis=0)


def run_preview(args: argparse.Namespace) -> int:
    """Write the preview grid of the first ``--count`` samples."""
    from PIL import Image

    if args.count < 1:
        raise CommandError(f"--count must be >= 1, got {args.count}")
    Image.init()
    if args.out.is_dir() or Image.registered_extensions().get(args.out.suffix.lower()) not in Image.SAVE:
        raise CommandError(f"--out {str(args.out)!r}: expected an image file name such as grid.png")
    dataset = _build(args, None)
    count = min(args.count, len(dataset))
    if count == 0:
        raise CommandError(f"dataset {args.name!r} {args.split} is empty")
    try:
        samples = [dataset[i] for i in range(count)]
    except (ValueError, FileNotFoundError) as error:  # ImageReadError, TFRecordError: they name the file
        raise CommandError(str(error)) from None
    grid = preview_grid(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out} ({count} samples, {grid.shape[1]}x{grid.shape[0]} pixels)")
    return 0


def run_materialise(args: argparse.Namespace) -> int:
    """Render/decode ``--count`` samples into the cache folder ``--out``."""
    from implicit_slots.data import materialise_dataset

    if args.count < 1:
        raise CommandError(f"--count must be >= 1, got {args.count}")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 1000 == 0:
            print(f"  {done}/{total} samples ({time.perf_counter() - start:.0f} s)", flush=True)

    try:
        dataset = materialise_dataset(
            args.name,
            args.out,
            args.split,
            args.image_size,
            args.seed,
            root=args.root,
            num_samples=args.count,
            progress=progress,
            **parse_options(args.option),
        )
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise CommandError(str(message)) from None
    print(f"cached {len(dataset)} samples in {getattr(dataset, 'path', args.out)}")
    return 0
