"""Table 1 of the paper: forward / backward time and activation memory of each gradient estimator.

For the ``unrolled``, ``neumann`` (order 1) and ``ift`` estimators on the slot-attention module (plain
iteration forward), at each iteration count: median forward and backward wall time, and the bytes the
autograd graph saves for backward (counted with ``torch.autograd.graph.saved_tensors_hooks``,
de-duplicated by storage), plus peak allocated memory on CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch

from implicit_slots.slot_attention import SlotAttention

T = TypeVar("T")

DESCRIPTION = "Table 1: time and activation memory of unrolled / Neumann / IFT gradients vs iterations"
GRADIENTS = ("unrolled", "neumann", "ift")


@dataclass
class BackwardRecord:
    """One row of the table (``--json`` writes a list of these)."""

    gradient: str
    iterations: int
    forward_ms: float
    backward_ms: float
    saved_bytes: int
    peak_cuda_bytes: int | None
    backward_steps: float | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 3, 7, 15, 30])
    parser.add_argument("--gradients", nargs="+", default=list(GRADIENTS), choices=GRADIENTS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-inputs", type=int, default=256, help="N (a 16x16 token grid by default)")
    parser.add_argument("--input-dim", type=int, default=64)
    parser.add_argument("--num-slots", type=int, default=7)
    parser.add_argument("--slot-dim", type=int, default=64)
    parser.add_argument("--mlp-hidden-dim", type=int, default=128)
    parser.add_argument("--backward-solver", default="broyden")
    parser.add_argument("--backward-max-iterations", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="write the records to this file")


def count_saved_bytes(run: Callable[[], T]) -> tuple[T, int]:
    """Run ``run()`` and count the bytes autograd saves for backward, de-duplicated by storage."""
    storages: dict[tuple[int, str], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), str(tensor.device))] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return result, sum(storages.values())


def measure(gradient: str, iterations: int, args: argparse.Namespace) -> BackwardRecord:
    """Time and measure one (estimator, iterations) cell."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    module = SlotAttention(
        args.input_dim,
        args.num_slots,
        args.slot_dim,
        args.mlp_hidden_dim,
        iterations,
        solver="iteration",
        gradient=gradient,
        backward_solver=args.backward_solver,
        backward_max_iterations=args.backward_max_iterations,
    ).to(device)
    inputs = torch.randn(args.batch_size, args.num_inputs, args.input_dim, device=device, requires_grad=True)
    target = torch.randn(args.batch_size, args.num_slots, args.slot_dim, device=device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    forward_times, backward_times, saved, steps = [], [], 0, []
    peak: int | None = None
    for repeat in range(args.repeats + 1):  # the first round warms up
        module.zero_grad(set_to_none=True)
        inputs.grad = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize()
        start = time.perf_counter()
        output, saved = count_saved_bytes(lambda: module(inputs))
        loss = (output.slots - target).pow(2).mean()
        synchronize()
        middle = time.perf_counter()
        loss.backward()
        synchronize()
        end = time.perf_counter()
        if repeat:
            forward_times.append((middle - start) * 1e3)
            backward_times.append((end - middle) * 1e3)
            backward = output.solution.backward
            if backward is not None:
                steps.append(backward.steps)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
    return BackwardRecord(
        gradient=gradient,
        iterations=iterations,
        forward_ms=statistics.median(forward_times),
        backward_ms=statistics.median(backward_times),
        saved_bytes=saved,
        peak_cuda_bytes=peak,
        backward_steps=statistics.mean(steps) if steps else None,
    )


def format_table(records: list[BackwardRecord]) -> str:
    """The Markdown table printed by the benchmark."""
    cuda = any(r.peak_cuda_bytes is not None for r in records)
    header = "| gradient | iterations | forward ms | backward ms | saved MiB |"
    header += " peak CUDA MiB |" if cuda else ""
    header += " backward solver steps |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        row = f"| {r.gradient} | {r.iterations} | {r.forward_ms:.1f} | {r.backward_ms:.1f} |"
        row += f" {r.saved_bytes / 2**20:.2f} |"
        if cuda:
            row += f" {(r.peak_cuda_bytes or 0) / 2**20:.1f} |"
        row += f" {r.backward_steps:.1f} |" if r.backward_steps is not None else " - |"
        lines.append(row)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    records = [measure(g, n, args) for g in args.gradients for n in args.iterations]
    print(
        f"Slot attention, batch {args.batch_size}, {args.num_inputs} inputs x {args.input_dim}, "
        f"{args.num_slots} slots x {args.slot_dim}, {args.threads} thread(s), device {args.device}, "
        f"median of {args.repeats}; IFT backward: {args.backward_solver} <= {args.backward_max_iterations}"
    )
    print()
    print(format_table(records))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in records], indent=2))
        print(f"\nwrote {args.json}")
    return 0
