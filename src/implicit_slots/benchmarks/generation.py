"""``implicit-slots bench generation``: autoregressive reconstruction with and without the key/value cache.

Times :meth:`Slate.generate_tokens` (greedy, eval mode, no grad) from the slots of random images, with the
cache (one decoder step per token) and without it (the whole decoder re-run on the growing prefix for every
token, as official SLATE does). The model has SLATE's default sizes at each image size (64x64: 256 tokens,
96x96: 576 tokens). Both paths produce the same tokens; the table says whether they did.

The uncached path is slow (quadratic in the number of tokens). ``--quick N`` does not run it in full: it
times single uncached steps at N prefix lengths spread over [1, T], interpolates the step time linearly in
between and sums over all T steps; those rows are labelled "estimated" and the token check covers only the
first 32 tokens.

Example::

    OMP_NUM_THREADS=1 implicit-slots bench generation --image-sizes 64 96 --batch-size 8
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

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


def build_generation_model(image_size: int) -> Slate:
    """SLATE at default sizes for ``image_size``, in eval mode."""
    return build_slate(dataclasses.replace(SlateConfig(), image_size=image_size)).eval()


def _timed_generation(model: Slate, slots: torch.Tensor, use_cache: bool) -> tuple[float, torch.Tensor]:
    """(wall seconds, tokens) of one greedy generation."""
    start = time.perf_counter()
    tokens = model.generate_tokens(slots, use_cache=use_cache)
    return time.perf_counter() - start, tokens


def uncached_step_seconds(model: Slate, slots: torch.Tensor, prefix_length: int, repeats: int = 3) -> float:
    """Median seconds of one uncached generation step whose decoder input has ``prefix_length`` positions."""
    memory = model.slot_projection(slots)
    tokens = torch.randint(0, model.vocab_size, (slots.shape[0], prefix_length - 1))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        hidden = model.decoder(model.embed_tokens(tokens), memory)  # (B, prefix_length, D)
        model.token_head(hidden[:, -1]).argmax(dim=-1)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def estimate_uncached_seconds(model: Slate, slots: torch.Tensor, num_samples: int) -> float:
    """Estimate the whole uncached generation from ``num_samples`` prefix lengths spread over [1, T].

    Step ``t`` of the uncached path runs the decoder on a prefix of ``t`` positions; its cost depends on
    ``t`` only. The step time is measured at evenly spaced prefix lengths (including 1 and T), linearly
    interpolated in between and summed over all T steps.
    """
    total_steps = model.num_tokens
    count = max(2, min(num_samples, total_steps))
    lengths = sorted({round(1 + i * (total_steps - 1) / (count - 1)) for i in range(count)})
    seconds = [uncached_step_seconds(model, slots, length) for length in lengths]
    all_lengths = torch.arange(1, total_steps + 1, dtype=torch.float64)
    known_lengths = torch.tensor(lengths, dtype=torch.float64)
    known_seconds = torch.tensor(seconds, dtype=torch.float64)
    index = torch.searchsorted(known_lengths, all_lengths).clamp(1, len(lengths) - 1)
    left, right = known_lengths[index - 1], known_lengths[index]
    weight = (all_lengths - left) / (right - left)
    interpolated = known_seconds[index - 1] * (1 - weight) + known_seconds[index] * weight
    return float(interpolated.sum())


def run(args: argparse.Namespace) -> int:
    """Time cached and uncached generation per image size and print a Markdown table."""
    torch.set_num_threads(args.threads)
    print(
        f"SLATE autoregressive reconstruction (greedy, default SLATE sizes, eval, no grad): batch "
        f"{args.batch_size}, {args.threads} thread(s)"
        + (
            f"; uncached path estimated from single steps at {args.quick} prefix lengths"
            if args.quick
            else ""
        )
    )
    print()
    print(
        "| image | tokens | cached s | cached ms/token | uncached s | uncached ms/token | speed-up | same |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for image_size in args.image_sizes:
        torch.manual_seed(0)
        model = build_generation_model(image_size)
        image = torch.rand(args.batch_size, 3, image_size, image_size)
        with torch.no_grad():
            slots = model.encode_slots(model.embed_tokens(model.encode_image_tokens(image))[:, 1:]).slots
            num_tokens = model.num_tokens
            cached_runs = [_timed_generation(model, slots, True) for _ in range(max(1, args.repeats))]
            cached_seconds = sorted(seconds for seconds, _ in cached_runs)[len(cached_runs) // 2]
            cached_tokens = cached_runs[0][1]
            if args.quick:
                uncached_seconds = estimate_uncached_seconds(model, slots, args.quick)
                uncached_label = f"{uncached_seconds:.1f} (estimated, {args.quick} prefix lengths)"
                prefix = model.generate_tokens(slots, use_cache=False, num_tokens=32)
                same = f"first 32: {torch.equal(prefix, cached_tokens[:, :32])}"
            else:
                uncached_seconds, uncached_tokens = _timed_generation(model, slots, False)
                uncached_label = f"{uncached_seconds:.1f}"
                same = str(torch.equal(uncached_tokens, cached_tokens))
        print(
            f"| {image_size}x{image_size} | {num_tokens} | {cached_seconds:.2f} | "
            f"{cached_seconds / num_tokens * 1000:.1f} | {uncached_label} | "
            f"{uncached_seconds / num_tokens * 1000:.1f} | {uncached_seconds / cached_seconds:.1f}x | "
            f"{same} |"
        )
    return 0
