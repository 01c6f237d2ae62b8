"""``implicit-slots bench solvers``: residual reached and time per forward solver and budget.

Every solver runs with a fixed budget (tolerance 0, so exactly ``budget`` evaluations of the map), without
the tape, on the same maps and starting points:

- ``affine``: ``f(z) = A z + x`` per sample with ‖A‖₂ = 0.95 (B=32, D=64): a map that costs almost nothing,
  so the time is the solver's own per-iteration work.
- ``slot-attention``: the slot-attention update at random initialisation (B=32, 256 inputs of size 64,
  7 slots of size 64, MLP 128), the paper's object-discovery setting; not a contraction at initialisation.
- ``slate-cell``: the same update at SLATE's sizes (3 slots of size 192, MLP 192, 256 inputs of size 192).

For each (map, solver, budget) the table gives the median process CPU time of a solve (with one thread, the
compute it needs even when other processes share the cores), its time per evaluation, the overhead per
evaluation (solve time minus ``budget`` plain evaluations of the map, divided by the budget) and the relative
residual ``‖f(z) − z‖ / ‖f(z)‖`` measured afresh at the returned iterate (median and worst sample).

torchdeq 0.1.0's solvers (``pip install torchdeq``; optional, never needed by the package) run beside ours
when it is installed, with the same number of evaluations, stop mode (relative) and Anderson memory. Its
Broyden evaluates the map once more than ``max_iter`` (it is called with ``budget - 1``). Its plain iteration
and Anderson return ``f`` of their lowest-residual iterate (one application beyond the iterate whose
residual they recorded); ours return the lowest-residual evaluated iterate itself.

Example::

    OMP_NUM_THREADS=1 implicit-slots bench solvers --budgets 7 30 60 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from implicit_slots.fixed_point import AndersonSolver, BroydenSolver, FixedPointIteration, ForwardSolver
from implicit_slots.fixed_point.types import residual_norms
from implicit_slots.slot_attention import SlotAttention

DESCRIPTION = "forward solvers (ours and torchdeq's when installed): residual reached and time per budget"
MAPS = ("affine", "slot-attention", "slate-cell")
SOLVERS = ("iteration", "anderson", "broyden")
ANDERSON_MEMORY = 5

Map = Callable[[Tensor], Tensor]
Solve = Callable[[Map, Tensor, int], Tensor]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument("--maps", nargs="+", default=list(MAPS), choices=MAPS)
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[7, 30, 60], help="evaluations per solve")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed solves per cell (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--no-torchdeq", action="store_true", help="time only our solvers even when torchdeq is installed"
    )


def build_map(name: str, batch_size: int) -> tuple[Map, Tensor]:
    """The map ``f`` (no tape) and the starting point z0 of one benchmark problem (seeded)."""
    generator = torch.Generator().manual_seed(0)
    if name == "affine":
        dim = 64
        matrices = torch.randn(batch_size, dim, dim, generator=generator)
        matrices = 0.95 * matrices / torch.linalg.matrix_norm(matrices, 2)[:, None, None]
        offsets = torch.randn(batch_size, dim, 1, generator=generator)
        return (lambda z: torch.baddbmm(offsets, matrices, z.unsqueeze(2)).squeeze(2)), torch.zeros(
            batch_size, dim
        )
    if name in ("slot-attention", "slate-cell"):
        input_dim, slots, slot_dim, hidden = (
            (64, 7, 64, 128) if name == "slot-attention" else (192, 3, 192, 192)
        )
        torch.manual_seed(0)
        module = SlotAttention(input_dim, slots, slot_dim, hidden, num_iterations=1).requires_grad_(False)
        inputs = torch.randn(batch_size, 256, input_dim, generator=generator)
        keys, values = module.keys_and_values(inputs)
        z0 = module.initializer(batch_size, slots, generator)
        return (lambda z: module.cell(z, keys, values).slots), z0
    raise ValueError(f"unknown map {name!r}; valid maps: {list(MAPS)}")


def our_solver(name: str, budget: int) -> ForwardSolver:
    """Our solver at a fixed budget with its default returned iterate (best for Anderson / Broyden)."""
    if name == "iteration":
        return FixedPointIteration(budget)
    if name == "anderson":
        return AndersonSolver(budget, memory=ANDERSON_MEMORY)
    return BroydenSolver(budget)


def torchdeq_solvers() -> dict[str, Callable[..., Any]] | None:
    """torchdeq's solver functions by our names, or None when torchdeq is not installed."""
    try:
        module = importlib.import_module("torchdeq.solver")
    except ImportError:
        return None
    return {
        "iteration": module.get_solver("fixed_point_iter"),
        "anderson": module.get_solver("anderson"),
        "broyden": module.get_solver("broyden"),
    }


def _torchdeq_solve(function: Callable[..., Any], name: str) -> Solve:
    options = {"m": ANDERSON_MEMORY} if name == "anderson" else {}

    # torchdeq's Broyden evaluates f once before its max_iter steps; the others evaluate it max_iter times.
    offset = 1 if name == "broyden" else 0

    def run(f: Map, z0: Tensor, budget: int) -> Tensor:
        state, _, _ = function(f, z0, max_iter=budget - offset, tol=0.0, stop_mode="rel", **options)
        return state

    return run


def _ours_solve(name: str) -> Solve:
    return lambda f, z0, budget: our_solver(name, budget).solve(f, z0).state


@dataclass
class SolverTiming:
    """One row: a solver's median solve time and the residual it reached."""

    seconds: float
    map_seconds: float
    median_residual: float
    worst_residual: float


@torch.no_grad()
def time_solver(solve: Solve, f: Map, z0: Tensor, budget: int, repeats: int) -> SolverTiming:
    """Median CPU time of ``repeats`` solves (after one warm-up) and the residual at the returned iterate."""
    state = solve(f, z0, budget)  # warm-up
    solve_times, map_times = [], []
    for _ in range(repeats):
        start = time.process_time()
        state = solve(f, z0, budget)
        solve_times.append(time.process_time() - start)
        start = time.process_time()
        z = z0
        for _ in range(budget):
            z = f(z)
        map_times.append(time.process_time() - start)
    _, relative = residual_norms(state, f(state))
    return SolverTiming(
        statistics.median(solve_times),
        statistics.median(map_times),
        float(relative.median()),
        float(relative.max()),
    )


def run(args: argparse.Namespace) -> int:
    """Time every (map, solver, budget, implementation) and print a Markdown table."""
    torch.set_num_threads(args.threads)
    implementations: dict[str, Callable[[str], Solve]] = {"ours": _ours_solve}
    deq = None if args.no_torchdeq else torchdeq_solvers()
    if deq is not None:
        implementations["torchdeq"] = lambda name: _torchdeq_solve(deq[name], name)
    absent = "" if deq is not None or args.no_torchdeq else " (torchdeq is not installed: ours only)"
    print(
        f"Forward solvers, fixed budgets (tolerance 0), no tape, batch {args.batch_size}, {args.threads} "
        f"thread(s), median of {args.repeats}; Anderson memory {ANDERSON_MEMORY}; returned iterate: the "
        f"lowest-residual one for Anderson / Broyden, the last for iteration{absent}"
    )
    print()
    print(
        "| map | solver | budget | implementation | CPU ms / solve | ms / evaluation "
        "| overhead ms / evaluation | relative residual (median / worst) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for map_name in args.maps:
        f, z0 = build_map(map_name, args.batch_size)
        for solver in args.solvers:
            for budget in args.budgets:
                for implementation, make in implementations.items():
                    timing = time_solver(make(solver), f, z0, budget, args.repeats)
                    overhead = (timing.seconds - timing.map_seconds) / budget
                    milliseconds = timing.seconds * 1e3
                    print(
                        f"| {map_name} | {solver} | {budget} | {implementation} | {milliseconds:.2f} | "
                        f"{milliseconds / budget:.3f} | {overhead * 1e3:.3f} | "
                        f"{timing.median_residual:.3g} / {timing.worst_residual:.3g} |"
                    )
    return 0
