"""``implicit-slots bench generation``: autoregressive reconstruction with and without the key/value cache.

Times :meth:`Slate.generate_tokens` (greedy, eval mode, no grad) from the slots of random images, with the
cache (one decoder step per token) and without it (the whole decoder re-run on the growing prefix for every
token, as official SLATE does). The model has SLATE's default sizes at each image size (64x64: 256 tokens,
96x96: 576 tokens). Both paths produce the same tokens; the table says whether they did.

The uncached path is slow (quadratic in the number of tokens). ``--quick N`` does not run it in full: it
times single uncached steps at N prefix lengths spread over [1, T], interpolates the step time linearly in
between and sums over all T steps; those rows are labelled "estimated" and the token check covers only the
first 32 tokens.

Every time is given as wall-clock seconds and process CPU seconds; with one thread the CPU time is the
compute needed even when other processes share the cores, and the speed-up is computed from it.

``--against-official PATH`` times official SLATE's ``reconstruct_autoregressive`` (a checkout the user
provides) against ours (cached) instead, at each image size: each in its own fresh process, alternating for
``--rounds`` rounds (:mod:`implicit_slots.benchmarks.official`).

Example::

    OMP_NUM_THREADS=1 implicit-slots bench generation --image-sizes 64 96 --batch-size 8
    implicit-slots bench generation --against-official ~/slate --image-sizes 64 --rounds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from implicit_slots.benchmarks import BenchmarkError
from implicit_slots.models.slate import Slate, SlateConfig, build_slate

DESCRIPTION = "autoregressive SLATE reconstruction: key/value-cached vs uncached decoding"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument("--image-sizes", nargs="+", type=int, default=[64, 96], help="square image sizes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of the cached path (median)")
    parser.add_argument(
        "--quick",
        type=int,
        default=0,
        metavar="N",
        help="estimate the uncached path from single steps at N prefix lengths (0: run it in full)",
    )
    parser.add_argument(
        "--against-official",
        type=Path,
        default=None,
        metavar="PATH",
        help="compare with official SLATE checked out at PATH (separate processes, alternating)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the official comparison")


def build_generation_model(image_size: int) -> Slate:
    """SLATE at default sizes for ``image_size``, in eval mode."""
    return build_slate(dataclasses.replace(SlateConfig(), image_size=image_size)).eval()


@dataclass
class Timing:
    """Wall-clock and process CPU seconds."""

    wall: float
    cpu: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


class _Stopwatch:
    def __enter__(self) -> _Stopwatch:
        self.start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(time.perf_counter() - self.start[0], time.process_time() - self.start[1])


def _timed_generation(model: Slate, slots: torch.Tensor, use_cache: bool) -> tuple[Timing, torch.Tensor]:
    """(time, tokens) of one greedy generation."""
    with _Stopwatch() as watch:
        tokens = model.generate_tokens(slots, use_cache=use_cache)
    return watch.timing, tokens


def uncached_step_time(model: Slate, slots: torch.Tensor, prefix_length: int, repeats: int = 3) -> Timing:
    """Median time of one uncached generation step whose decoder input has ``prefix_length`` positions."""
    memory = model.slot_projection(slots)
    tokens = torch.randint(0, model.vocab_size, (slots.shape[0], prefix_length - 1))
    timings = []
    for _ in range(repeats):
        with _Stopwatch() as watch:
            hidden = model.decoder(model.embed_tokens(tokens), memory)  # (B, prefix_length, D)
            model.token_head(hidden[:, -1]).argmax(dim=-1)
        timings.append(watch.timing)
    return sorted(timings, key=lambda timing: timing.cpu)[len(timings) // 2]


def estimate_uncached_time(model: Slate, slots: torch.Tensor, num_samples: int) -> Timing:
    """Estimate the whole uncached generation from ``num_samples`` prefix lengths spread over [1, T].

    Step ``t`` of the uncached path runs the decoder on a prefix of ``t`` positions; its cost depends on
    ``t`` only. The step time is measured at evenly spaced prefix lengths (including 1 and T), linearly
    interpolated in between and summed over all T steps.
    """
    total_steps = model.num_tokens
    count = max(2, min(num_samples, total_steps))
    lengths = sorted({round(1 + i * (total_steps - 1) / (count - 1)) for i in range(count)})
    timings = [uncached_step_time(model, slots, length) for length in lengths]
    all_lengths = torch.arange(1, total_steps + 1, dtype=torch.float64)
    known_lengths = torch.tensor(lengths, dtype=torch.float64)
    index = torch.searchsorted(known_lengths, all_lengths).clamp(1, len(lengths) - 1)
    weight = (all_lengths - known_lengths[index - 1]) / (known_lengths[index] - known_lengths[index - 1])

    def total(values: list[float]) -> float:
        known = torch.tensor(values, dtype=torch.float64)
        return float((known[index - 1] * (1 - weight) + known[index] * weight).sum())

    return Timing(total([t.wall for t in timings]), total([t.cpu for t in timings]))


def run(args: argparse.Namespace) -> int:
    """Time cached and uncached generation per image size and print a Markdown table."""
    if args.against_official is not None:
        return run_against_official(args)
    torch.set_num_threads(args.threads)
    quick = (
        f"; uncached path estimated from single steps at {args.quick} prefix lengths" if args.quick else ""
    )
    print(
        f"SLATE autoregressive reconstruction (greedy, default SLATE sizes, eval, no grad): batch "
        f"{args.batch_size}, {args.threads} thread(s){quick}"
    )
    print()
    print(
        "| image | tokens | cached wall s / CPU s | uncached wall s / CPU s | speed-up (CPU) | same tokens |"
    )
    print("|---|---|---|---|---|---|")
    for image_size in args.image_sizes:
        torch.manual_seed(0)
        model = build_generation_model(image_size)
        image = torch.rand(args.batch_size, 3, image_size, image_size)
        with torch.no_grad():
            slots = model.encode_slots(model.embed_tokens(model.encode_image_tokens(image))[:, 1:]).slots
            cached_runs = [_timed_generation(model, slots, True) for _ in range(max(1, args.repeats))]
            cached = sorted((timing for timing, _ in cached_runs), key=lambda t: t.cpu)[len(cached_runs) // 2]
            cached_tokens = cached_runs[0][1]
            if args.quick:
                uncached = estimate_uncached_time(model, slots, args.quick)
                label = " (estimated)"
                prefix = model.generate_tokens(slots, use_cache=False, num_tokens=32)
                same = f"first 32: {torch.equal(prefix, cached_tokens[:, :32])}"
            else:
                uncached, uncached_tokens = _timed_generation(model, slots, False)
                label = ""
                same = str(torch.equal(uncached_tokens, cached_tokens))
        print(
            f"| {image_size}x{image_size} | {model.num_tokens} | {cached.wall:.2f} / {cached.cpu:.2f} | "
            f"{uncached.wall:.1f} / {uncached.cpu:.1f}{label} | {uncached.cpu / cached.cpu:.1f}x | {same} |"
        )
    return 0


def run_against_official(args: argparse.Namespace) -> int:
    """Official SLATE's generation against ours (cached), alternating fresh processes, per image size."""
    from implicit_slots.benchmarks import official

    try:
        checkout = official.check_checkout(args.against_official)
    except ValueError as error:
        raise BenchmarkError(str(error)) from error
    print(
        f"SLATE greedy autoregressive reconstruction, official ({checkout}, no cache) vs ours (key/value "
        f"cache): batch {args.batch_size}, eval, no grad, {args.threads} thread(s), one warm-up on 2 images "
        f"and {args.repeats} timed batch(es) per process, {args.rounds} round(s); {official.describe_load()}"
    )
    for image_size in args.image_sizes:
        options: dict[str, object] = {
            "image_size": image_size,
            "batch_size": args.batch_size,
            "iterations": 7,
            "threads": args.threads,
            "steps": max(1, args.repeats),
        }
        try:
            comparison = official.compare("generation", checkout, options, args.rounds)
        except RuntimeError as error:
            raise BenchmarkError(str(error)) from error
        print()
        print(f"{image_size}x{image_size} ({(image_size // 4) ** 2} tokens):")
        print()
        print(official.format_comparison(comparison, "per batch"))
    print(f"after: {official.describe_load()}")
    return 0
