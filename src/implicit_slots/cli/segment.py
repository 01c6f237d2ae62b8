"""``implicit-slots segment``: apply a trained model to your own images.

Usage::

    implicit-slots segment IMAGE_OR_FOLDER... --model NAME_OR_RUN_DIR --out DIR [--no-reconstruction]

For each image it writes ``DIR/STEM.png`` (input | reconstruction | segmentation | one panel per slot),
``DIR/STEM_masks.npy`` (the soft masks, (K, H, W) float16 at the image's own size) and
``DIR/STEM_labels.png`` (the slot of each pixel). Any RGB, RGBA (alpha dropped) or grayscale image of any
size is accepted: it is resized to the model's square input size (the whole image, aspect ratio not kept)
and the masks are resized back. Files that cannot be read are reported by name and skipped; the exit code
is 1 if any was skipped, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from implicit_slots.cli import CommandError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def register(subparsers: Any) -> None:
    """Add the ``segment`` sub-command."""
    parser = subparsers.add_parser(
        "segment",
        help="segment your own images with a trained model (masks, slots, figures)",
        description="Segment images into slots with a shipped model (`implicit-slots pretrained list`) "
        "or a run folder / checkpoint / weights file.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="images or folders")
    parser.add_argument("--model", required=True, help="shipped model name, run folder or weights file")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--no-reconstruction",
        action="store_true",
        help="skip the reconstruction panel (for SLATE: no token-by-token generation, much faster)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial slots (default: 0)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device (default: cpu)")
    parser.set_defaults(func=run)


def _collect(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files of the inputs (a folder's image files, sorted, not recursive) and problems."""
    files: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            problems.append(f"{item}: no such file or folder")
    return files, problems


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    import torch
    from tqdm import tqdm

    from implicit_slots.data.images import ImageReadError, read_rgb
    from implicit_slots.pretrained import ModelFileError, load_pretrained
    from implicit_slots.pretrained.figures import write_segmentation

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: no CUDA device is available")
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {str(args.out)!r} is a file; give a folder for the figures and masks")
    try:
        model = load_pretrained(args.model, device=args.device)
    except ModelFileError as error:
        raise CommandError(str(error)) from error
    files, problems = _collect(args.inputs)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not files:
        raise CommandError("no images to segment")
    size = model.image_size
    num_slots = model.model.slot_attention.num_slots
    print(
        f"model {model.name} ({model.config.model.name}, {num_slots} slots) takes {size}x{size} images: "
        f"each image is resized to {size}x{size} (the whole image, aspect ratio not kept) "
        "and its masks back to its own size"
    )
    used: set[str] = set()
    written = 0
    failed = len(problems)
    for path in tqdm(files, desc="segment", unit="image", disable=len(files) < 2, file=sys.stderr):
        try:
            pixels = read_rgb(path)  # (H, W, 3) uint8
        except ImageReadError as error:
            tqdm.write(f"skipped: {error}", file=sys.stderr)
            failed += 1
            continue
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0)  # (3, H, W)
        result = model.segment(image, reconstruct=not args.no_reconstruction, seed=args.seed)
        stem, index = path.stem, 2
        while stem in used:
            stem, index = f"{path.stem}_{index}", index + 1
        used.add(stem)
        reconstruction = result.reconstruction[0] if result.reconstruction is not None else None
        write_segmentation(args.out, stem, image, result.masks[0].cpu(), reconstruction)
        written += 1
    print(f"segmented {written} image(s) into {args.out}" + (f"; {failed} skipped" if failed else ""))
    return 1 if failed else 0
