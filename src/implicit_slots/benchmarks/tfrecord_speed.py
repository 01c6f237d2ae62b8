"""``implicit-slots bench tfrecord``: reading and converting a DeepMind-format TFRecord file, one thread.

A synthetic GZIP TFRecord is written first, in the exact record format of a DeepMind multi-object file: by
default 4,096 Tetrominoes records (one conversion shard, about 105 MB of uncompressed records) rendered by
the procedural ``tetrominoes`` dataset; ``--format clevr-with-masks`` writes 240x320 CLEVR-with-masks
records (about 3.2 MB each) rendered by ``clevr-lite`` instead. Three steps are timed in the main process,
each the fastest of ``--repeats`` runs of the process's CPU time (robust when other jobs share the machine):

- *conversion*: :func:`~implicit_slots.data.loaders.multi_object.convert_tfrecord`, the one-time conversion
  into array shards that a ``dm-*`` dataset runs on first use (timed first, in a fresh process);
- *read records*: :func:`~implicit_slots.data.tfrecord.read_records` over the whole file (decompression,
  framing and every per-record check);
- *CRC-32C alone*: :func:`~implicit_slots.data.tfrecord.masked_crc32c` of every record's length field and
  payload, on payloads already in memory.

The module uses only functions that earlier versions of the package also have, so running this file by
path with ``PYTHONPATH`` pointing at an older checkout's ``src`` times that checkout.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

DESCRIPTION = "read and convert a synthetic DeepMind-format TFRecord file (CPU time, one thread)"

FORMATS = ("tetrominoes", "clevr-with-masks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmark."""
    parser.add_argument("--format", choices=FORMATS, default="tetrominoes", help="record layout")
    parser.add_argument(
        "--records", type=int, default=None, help="records in the file (default 4096; clevr-with-masks 32)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per step (the fastest is shown)")


def _examples(layout_name: str, count: int) -> Iterator[bytes]:
    """Serialised Examples of ``count`` rendered scenes in the layout's exact feature sizes."""
    from implicit_slots.data import build_dataset
    from implicit_slots.data.tfrecord import encode_example

    if layout_name == "tetrominoes":
        dataset = build_dataset("tetrominoes", "train", 35, 0, num_samples=count)
        for index in range(count):
            sample = dataset[index]
            image = np.round(sample["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)  # (35, 35, 3)
            masks = (sample["masks"].numpy() * 255).astype(np.uint8)  # (4, 35, 35)
            yield encode_example({"image": image, "mask": masks})
        return
    dataset = build_dataset("clevr-lite", "train", 320, 0, num_samples=count, max_objects=10, zoom=1.0)
    for index in range(count):
        sample = dataset[index]
        image = np.round(sample["image"].numpy()[:, 40:280].transpose(1, 2, 0) * 255).astype(np.uint8)
        masks = (sample["masks"].numpy()[:, 40:280] * 255).astype(np.uint8)  # (11, 240, 320)
        yield encode_example({"image": image, "mask": masks})


def _fastest(step: Callable[[], object], repeats: int) -> float:
    """The smallest CPU time in seconds of ``repeats`` calls of ``step``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best


def run(args: argparse.Namespace) -> int:
    """Write the file, time the three steps and print the Markdown table."""
    from implicit_slots.data.loaders import multi_object
    from implicit_slots.data.tfrecord import masked_crc32c, read_records, write_records

    torch.set_num_threads(1)
    count = args.records if args.records is not None else (4096 if args.format == "tetrominoes" else 32)
    if count < 1 or args.repeats < 1:
        raise ValueError(f"--records and --repeats must be >= 1, got {count} and {args.repeats}")
    layout = multi_object.TETROMINOES if args.format == "tetrominoes" else multi_object.CLEVR_WITH_MASKS
    with tempfile.TemporaryDirectory(prefix="bench-tfrecord-") as folder:
        path = Path(folder) / layout.file
        write_records(path, _examples(args.format, count))
        megabytes = sum(16 + len(data) for data in read_records(path)) / 1e6

        def convert() -> None:
            with tempfile.TemporaryDirectory(dir=folder) as target:
                multi_object.convert_tfrecord(path, layout, Path(target), None)

        def read() -> None:
            for _ in read_records(path):
                pass

        def crc_alone(payloads: list[bytes]) -> None:
            for data in payloads:
                masked_crc32c(struct.pack("<Q", len(data)))
                masked_crc32c(data)

        # The conversion runs first, in the state a first use of a dm-* dataset finds the process in: which
        # large buffers were freed before changes how the allocator serves the next ones (page faults).
        timings = [
            ("conversion", _fastest(convert, args.repeats)),
            ("read records", _fastest(read, args.repeats)),
        ]
        payloads = list(read_records(path))
        timings.append(("CRC-32C alone", _fastest(lambda: crc_alone(payloads), args.repeats)))
        print(
            f"{args.format}: {count} records, {megabytes:.1f} MB of records, "
            f"{path.stat().st_size / 1e6:.1f} MB GZIP file"
        )
        print("| step | CPU s | MB/s of records | records/s |")
        print("|---|---|---|---|")
        for name, seconds in timings:
            rate = 1.0 / max(seconds, 1e-9)  # a tiny file can take less than the clock's resolution
            print(f"| {name} | {seconds:.3f} | {megabytes * rate:.0f} | {count * rate:.0f} |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
