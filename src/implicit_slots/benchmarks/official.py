"""Side by side with official SLATE (Singh et al. 2022): a training step and autoregressive generation.

The user gives a checkout of github.com/singhgautam/slate (``PATH`` holding ``slate.py``); nothing of it is
copied here. Each measurement runs in its own fresh Python process (``python -m
implicit_slots.benchmarks.official ...``), whose ``PYTHONPATH`` starts with ``PATH`` so that the checkout's
modules import as its own ``train.py`` imports them. Official and ours alternate, one process each per round,
and the order flips every round, so that slow phases of a shared machine hit both alike.

What both processes do (the sizes are official ``train.py``'s defaults, which ``SlateConfig()`` matches):

- training step: ``model.train()``, ``zero_grad``, forward, ``loss = mse + cross_entropy``, backward,
  ``clip_grad_norm_(…, 1.0, "inf")``, ``Adam.step`` with train.py's two parameter groups (dVAE 3e-4, the rest
  1e-4); official as ``model(image, tau=1.0, hard=False)``. Uniform random images, two fixed batches,
  alternating; warm-up steps, then timed steps.
- generation: greedy autoregressive reconstruction of a batch (``model.eval()``, no grad): official
  ``SLATE.reconstruct_autoregressive`` (re-runs the decoder on the whole prefix for every token), ours
  ``Slate.reconstruct_autoregressive`` (key/value cache). One warm-up on two images, then one timed batch.

With ``keep_freed_memory`` (``--keep-freed-memory`` on the command line) both processes first call
:func:`implicit_slots.models.speed.keep_freed_memory` (glibc keeps freed memory instead of returning it).

Times are wall-clock and process CPU time (with one thread the CPU time is the compute needed even when other
processes share the cores). The parent prints every round, both pooled medians, their spread and the ratio
official / ours, with the load average of the machine before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

IMPLEMENTATIONS = ("official", "ours")
RESULT_PREFIX = "RESULT "


@dataclass
class Measurement:
    """What one child process measured: milliseconds per timed step (or per generated batch)."""

    wall_ms: list[float]
    cpu_ms: list[float]


def check_checkout(path: Path) -> Path:
    """The resolved checkout folder; ValueError when it does not hold official SLATE's ``slate.py``."""
    path = path.expanduser().resolve()
    if not (path / "slate.py").is_file():
        raise ValueError(
            f"{str(path)!r} is not a checkout of official SLATE (no slate.py there); "
            f"clone github.com/singhgautam/slate and pass its folder"
        )
    return path


def official_arguments(image_size: int, num_iterations: int) -> argparse.Namespace:
    """Official ``train.py``'s defaults (the model part) at this image size and iteration count."""
    return argparse.Namespace(
        image_size=image_size,
        num_dec_blocks=4,
        vocab_size=1024,
        d_model=192,
        num_heads=4,
        dropout=0.1,
        num_iterations=num_iterations,
        num_slots=3,
        num_slot_heads=1,
        slot_size=192,
        mlp_hidden_size=192,
        img_channels=3,
        pos_channels=4,
    )


def _timed(run: Callable[[int], object], count: int, warmup: int) -> Measurement:
    """Milliseconds of ``run(index)`` for ``count`` timed calls after ``warmup`` untimed ones."""
    wall, cpu = [], []
    for index in range(warmup + count):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(index)
        if index >= warmup:
            wall.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
    return Measurement(wall, cpu)


def measure_official_training(options: argparse.Namespace) -> Measurement:
    """Child process: official SLATE's training step (imports ``slate`` from the checkout on PYTHONPATH)."""
    from slate import SLATE  # the user's checkout, first on this process's PYTHONPATH

    torch.manual_seed(0)
    model = SLATE(official_arguments(options.image_size, options.iterations)).train()
    optimizer = torch.optim.Adam(
        [
            {"params": [p for n, p in model.named_parameters() if "dvae" in n], "lr": 3e-4},
            {"params": [p for n, p in model.named_parameters() if "dvae" not in n], "lr": 1e-4},
        ]
    )
    images = [torch.rand(options.batch_size, 3, options.image_size, options.image_size) for _ in range(2)]

    def step(index: int) -> None:
        optimizer.zero_grad()
        _, cross_entropy, mse, _ = model(images[index % 2], 1.0, False)
        (mse + cross_entropy).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, float("inf"))
        optimizer.step()

    return _timed(step, options.steps, options.warmup)


def _our_model(options: argparse.Namespace) -> torch.nn.Module:
    from implicit_slots.models.slate import SlateConfig, build_slate

    config = SlateConfig(image_size=options.image_size)
    config.slot_attention = dataclasses.replace(
        config.slot_attention, variant=options.variant, num_iterations=options.iterations
    )
    torch.manual_seed(0)
    return build_slate(config)


def measure_our_training(options: argparse.Namespace) -> Measurement:
    """Child process: our SLATE training step (the same step as ``bench train-step``)."""
    from implicit_slots.benchmarks.slate_step import make_optimizer, training_step

    model = _our_model(options).train()
    optimizer, parameters = make_optimizer(model)  # type: ignore[arg-type]
    images = [torch.rand(options.batch_size, 3, options.image_size, options.image_size) for _ in range(2)]
    return _timed(
        lambda index: training_step(model, optimizer, parameters, images[index % 2]),  # type: ignore[arg-type]
        options.steps,
        options.warmup,
    )


def measure_generation(options: argparse.Namespace, implementation: str) -> Measurement:
    """Child process: one warm-up on two images, then ``steps`` timed greedy reconstructions of a batch."""
    torch.manual_seed(0)
    if implementation == "official":
        from slate import SLATE  # the user's checkout, first on this process's PYTHONPATH

        model = SLATE(official_arguments(options.image_size, options.iterations)).eval()
        reconstruct = model.reconstruct_autoregressive
    else:
        model = _our_model(options).eval()
        reconstruct = model.reconstruct_autoregressive
    image = torch.rand(options.batch_size, 3, options.image_size, options.image_size)
    with torch.no_grad():
        reconstruct(image[:2])  # warm-up
        return _timed(lambda index: reconstruct(image), options.steps, 0)


def child_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a child process: measure one implementation, print one JSON result line."""
    parser = argparse.ArgumentParser(description="one side of the official-SLATE comparison (child process)")
    parser.add_argument("task", choices=("train-step", "generation"))
    parser.add_argument("implementation", choices=IMPLEMENTATIONS)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--variant", default="IN")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--keep-freed-memory", type=int, default=0, help="1: glibc keeps freed memory")
    options = parser.parse_args(argv)
    if options.keep_freed_memory:
        from implicit_slots.models.speed import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(options.threads)
    if options.task == "generation":
        measurement = measure_generation(options, options.implementation)
    elif options.implementation == "official":
        measurement = measure_official_training(options)
    else:
        measurement = measure_our_training(options)
    print(RESULT_PREFIX + json.dumps(dataclasses.asdict(measurement)), flush=True)
    return 0


def run_child(
    task: str, implementation: str, checkout: Path, options: dict[str, object], timeout_s: float | None = None
) -> Measurement:
    """Run one measurement in a fresh process and return what it printed.

    Raises:
        RuntimeError: the child failed (its error output is in the message) or printed no result.
    """
    command = [sys.executable, "-m", "implicit_slots.benchmarks.official", task, implementation]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    threads = str(options["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if implementation == "official":
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the {implementation} {task} process failed (exit {done.returncode}):\n{tail}")
    return Measurement(**json.loads(lines[-1][len(RESULT_PREFIX) :]))


@dataclass
class Comparison:
    """Every round's measurement per implementation."""

    rounds: dict[str, list[Measurement]]

    def pooled(self, implementation: str, cpu: bool = False) -> list[float]:
        """All timed values of one implementation across rounds (ms)."""
        return [v for m in self.rounds[implementation] for v in (m.cpu_ms if cpu else m.wall_ms)]

    def median(self, implementation: str, cpu: bool = False) -> float:
        return statistics.median(self.pooled(implementation, cpu))

    def ratio(self, cpu: bool = False) -> float:
        """official / ours of the pooled medians (> 1: ours is faster)."""
        return self.median("official", cpu) / self.median("ours", cpu)


def compare(
    task: str,
    checkout: Path,
    options: dict[str, object],
    rounds: int,
    log: Callable[[str], object] = print,
    timeout_s: float | None = None,
) -> Comparison:
    """Alternate official and ours (one fresh process each per round, order flipped every round)."""
    results: dict[str, list[Measurement]] = {name: [] for name in IMPLEMENTATIONS}
    for index in range(rounds):
        order = IMPLEMENTATIONS if index % 2 == 0 else IMPLEMENTATIONS[::-1]
        for implementation in order:
            measurement = run_child(task, implementation, checkout, options, timeout_s)
            results[implementation].append(measurement)
            wall, cpu = statistics.median(measurement.wall_ms), statistics.median(measurement.cpu_ms)
            log(
                f"round {index + 1}: {implementation} median {wall / 1e3:.3f} s wall, {cpu / 1e3:.3f} s CPU "
                f"(load average {os.getloadavg()[0]:.2f})"
            )
    return Comparison(results)


def format_comparison(comparison: Comparison, unit: str) -> str:
    """A Markdown table: per implementation, round medians, pooled median, spread, CPU; then the ratio."""
    lines = [
        f"| implementation | round medians (s {unit}) | pooled median (s {unit}) | min-max (s) | "
        f"CPU median (s {unit}) |",
        "|---|---|---|---|---|",
    ]
    for name in IMPLEMENTATIONS:
        rounds = ", ".join(f"{statistics.median(m.wall_ms) / 1e3:.3f}" for m in comparison.rounds[name])
        pooled = comparison.pooled(name)
        spread = f"{min(pooled) / 1e3:.3f}-{max(pooled) / 1e3:.3f}"
        lines.append(
            f"| {name} | {rounds} | {comparison.median(name) / 1e3:.3f} | {spread} | "
            f"{comparison.median(name, cpu=True) / 1e3:.3f} |"
        )
    lines.append("")
    lines.append(
        f"official / ours: {comparison.ratio():.2f}x (wall), {comparison.ratio(cpu=True):.2f}x (CPU); "
        f"> 1 means ours is faster"
    )
    return "\n".join(lines)


def describe_load() -> str:
    """The machine's load averages (1, 5, 15 minutes) and core count, for the printed header."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(child_main())
