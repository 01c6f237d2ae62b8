"""``implicit-slots bench gpu``: the paper-scale SLATE on a GPU: eager vs compiled, bf16, steps/s, memory.

Run ``implicit-slots bench gpu`` on a CUDA machine (about 4-8 minutes; sections that would start after
``--budget-s`` seconds are skipped). It prints one Markdown table:

1. SLATE training steps/s at 96x96 (``configs/paper/paper/table3_clevr_mirror_{vanilla,implicit}.yaml``:
   7 slot-attention iterations, batch 50, SLATE sizes), forward + loss + backward + inf-norm clipping +
   Adam, with the peak GPU memory of each: eager in bf16 autocast (vanilla and IN), eager in fp32 (TF32
   matmuls, IN), and compiled (:func:`implicit_slots.models.speed.compile_model`, inductor) in bf16
   autocast (IN and vanilla), with the compilation time;
2. the key/value-cached autoregressive generation speed at 96x96 (576 tokens per image) and its memory;
3. a few hundred steps of the Table 3 implicit config trained by the engine on ``clevr-mirror-lite``
   (procedural, rendered by DataLoader workers), then evaluated (MSE through the slots on test images).

Without CUDA it says so and runs the same code path at a tiny size on the CPU (a dry run, compiled with the
"eager" backend, which only traces; exit 0), so the command is tested where there is no GPU. The configs are
read from the source checkout's ``configs/paper/paper/``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from implicit_slots.benchmarks import BenchmarkError
from implicit_slots.config import CONFIGS_DIR, ExperimentConfig, load_config
from implicit_slots.evaluation.runner import evaluate_run
from implicit_slots.experiment import build_model
from implicit_slots.models.slate import Slate
from implicit_slots.models.speed import compile_model
from implicit_slots.training.loop import train

DESCRIPTION = "paper-scale SLATE on a GPU: eager vs compiled, bf16, steps/s, memory (CPU: a tiny dry run)"
PAPER_CONFIGS = CONFIGS_DIR / "paper" / "paper"
VARIANT_CONFIGS = {
    "vanilla": PAPER_CONFIGS / "table3_clevr_mirror_vanilla.yaml",
    "IN": PAPER_CONFIGS / "table3_clevr_mirror_implicit.yaml",
}
# The CPU dry run: same configs and code path, tiny sizes.
DRY_RUN_OVERRIDES = (
    "model.image_size=16",
    "data.image_size=16",
    "model.vocab_size=16",
    "model.d_model=16",
    "model.num_heads=2",
    "model.num_decoder_blocks=1",
    "model.dvae_hidden_channels=8",
    "model.slot_attention.slot_dim=16",
    "model.slot_attention.mlp_hidden_dim=16",
    "training.batch_size=4",
)


@dataclass
class Row:
    """One line of the printed table."""

    check: str
    setting: str
    value: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def _config(variant: str, overrides: Sequence[str]) -> ExperimentConfig:
    path = VARIANT_CONFIGS[variant]
    if not path.is_file():
        raise BenchmarkError(
            f"{str(path)!r} not found: run `bench gpu` from a source checkout of the project"
        )
    return load_config(path, list(overrides))


@dataclass
class TrainingTiming:
    """Steps per second, peak memory and (compiled only) the compilation time of the warm-up."""

    steps_per_second: float
    peak: str
    warmup_seconds: float


def time_training(
    variant: str,
    overrides: Sequence[str],
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
    *,
    bf16: bool = True,
    compile_backend: str | None = None,
) -> TrainingTiming:
    """Steps/s and peak memory of SLATE training steps (bf16 autocast or fp32; eager or compiled)."""
    config = _config(variant, overrides)
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    if compile_backend is not None:
        compile_model(model, backend=compile_backend)
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(
        [{"params": groups["dvae"], "lr": 3e-4}, {"params": groups["main"], "lr": 1e-4}]
    )
    parameters = [p for group in groups.values() for p in group]
    size = config.model.config.image_size
    images = [torch.rand(batch_size, 3, size, size, device=device) for _ in range(2)]  # (B, 3, H, W)
    _reset_peak(device)
    begun = time.perf_counter()
    started = 0.0
    warmup_seconds = 0.0
    for index in range(warmup + steps):
        if index == warmup:
            _sync(device)
            started = time.perf_counter()
            warmup_seconds = started - begun
        batch = {"image": images[index % 2]}
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.compute_loss(model(batch), batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0, norm_type=float("inf"))
        optimizer.step()
    _sync(device)
    return TrainingTiming(steps / (time.perf_counter() - started), _peak_gib(device), warmup_seconds)


def time_generation(
    overrides: Sequence[str], device: torch.device, batch_size: int
) -> tuple[float, int, str]:
    """(seconds per batch, tokens per image, peak memory) of key/value-cached greedy generation."""
    config = _config("IN", overrides)
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    if not isinstance(model, Slate):
        raise BenchmarkError(f"the generation check needs a SLATE config, got model {config.model.name!r}")
    size = config.model.config.image_size
    image = torch.rand(batch_size, 3, size, size, device=device)  # (B, 3, H, W)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model.reconstruct_autoregressive(image[:2], use_cache=True)  # warm-up
        _reset_peak(device)
        _sync(device)
        started = time.perf_counter()
        output = model.reconstruct_autoregressive(image, use_cache=True)
        _sync(device)
    return time.perf_counter() - started, int(output.tokens.shape[1]), _peak_gib(device)


def short_table3_run(
    overrides: Sequence[str], device: torch.device, steps: int, eval_images: int, workers: int, out: Path
) -> list[Row]:
    """Train the Table 3 implicit config on clevr-mirror-lite for ``steps`` steps, then evaluate it."""
    run_overrides = [
        *overrides,
        "data.name=clevr-mirror-lite",
        "data.root=null",
        f"data.num_workers={workers}",
        "data.num_samples.train=20000",
        "data.num_samples.test=256",
        f"training.max_steps={steps}",
        f"training.device={device.type}",
        "training.precision=bf16",
        "training.validation.every=0",
        "training.lr_decay.kind=null",  # the plateau rule needs validation; a short run does not decay
        f"training.checkpoint_every={steps}",
        f"training.log_every={max(1, steps // 10)}",
        f"diagnostics.every={max(1, steps // 3)}",
        "diagnostics.images_every=0",
    ]
    config = load_config(VARIANT_CONFIGS["IN"], run_overrides)
    run_dir = out / "table3_clevr_mirror_lite"
    _reset_peak(device)
    started = time.perf_counter()
    result = train(config, run_dir)
    seconds = time.perf_counter() - started
    peak = _peak_gib(device)
    evaluation = evaluate_run(run_dir, "test", max_images=eval_images, device=device.type)
    metrics = evaluation.metrics
    setting = (
        f"implicit, clevr-mirror-lite {config.data.image_size}px, batch {config.training.batch_size}, bf16"
    )
    return [
        Row(
            "Table 3 run: training",
            setting,
            f"{result.step} steps in {seconds:.0f} s "
            f"({result.step / seconds:.2f} steps/s incl. data), peak {peak}",
        ),
        Row(
            "Table 3 run: last loss",
            setting,
            f"{result.last_loss:.4g}" if result.last_loss is not None else "-",
        ),
        Row(
            "Table 3 run: evaluation",
            f"{int(metrics.get('num_images', 0))} test images",
            ", ".join(
                f"{name} {metrics[name]:.4g}"
                for name in ("mse_autoregressive", "mse_dvae", "cross_entropy")
                if name in metrics
            ),
        ),
    ]


def run_checks(
    device: torch.device,
    overrides: Sequence[str],
    *,
    batch_size: int,
    warmup: int,
    steps: int,
    generation_batch: int,
    table3_steps: int,
    eval_images: int,
    workers: int,
    budget_s: float,
    compile_backend: str | None,
) -> list[Row]:
    """Every check, in order; a section that would start after ``budget_s`` seconds is skipped.

    ``compile_backend`` None skips the compiled rows.
    """
    rows: list[Row] = []
    started = time.perf_counter()
    size = _config("IN", overrides).model.config.image_size

    def over_budget(name: str) -> bool:
        if time.perf_counter() - started > budget_s:
            rows.append(Row(name, "skipped", f"time budget {budget_s:.0f} s used up"))
            return True
        return False

    runs: list[tuple[str, bool, str | None]] = [
        ("vanilla", True, None),
        ("IN", True, None),
        ("IN", False, None),
    ]
    if compile_backend is not None:
        runs += [("IN", True, compile_backend), ("vanilla", True, compile_backend)]
    for variant, bf16, backend in runs:
        mode = f"{'compiled' if backend else 'eager'}, {'bf16 autocast' if bf16 else 'fp32 (TF32 matmuls)'}"
        if over_budget(f"training {variant}, {mode}"):
            continue
        timing = time_training(
            variant, overrides, device, batch_size, warmup, steps, bf16=bf16, compile_backend=backend
        )
        compiled = f", warm-up incl. compilation {timing.warmup_seconds:.0f} s" if backend else ""
        rows.append(
            Row(
                f"SLATE training step, {variant}, {mode}",
                f"{size}x{size}, batch {batch_size}, 7 iterations",
                f"{timing.steps_per_second:.2f} steps/s "
                f"({timing.steps_per_second * batch_size:.0f} images/s), peak {timing.peak}{compiled}",
            )
        )
    if not over_budget("cached generation"):
        seconds, tokens, peak = time_generation(overrides, device, generation_batch)
        rows.append(
            Row(
                "cached AR generation",
                f"{size}x{size} ({tokens} tokens), batch {generation_batch}, bf16 autocast",
                f"{seconds:.2f} s per batch ({generation_batch / seconds:.1f} images/s), peak {peak}",
            )
        )
    if not over_budget("Table 3 run"):
        with tempfile.TemporaryDirectory() as folder:
            rows += short_table3_run(overrides, device, table3_steps, eval_images, workers, Path(folder))
    rows.append(Row("total", str(device), f"{time.perf_counter() - started:.0f} s"))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """The Markdown table of the rows."""
    lines = ["| check | setting | result |", "|---|---|---|"]
    lines += [f"| {row.check} | {row.setting} | {row.value} |" for row in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument("--steps", type=int, default=300, help="steps of the short Table 3 run (default 300)")
    parser.add_argument("--batch-size", type=int, default=50, help="training batch size (SLATE: 50)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip sections starting after this")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled training rows")
    parser.add_argument("--cpu-dry-run", action="store_true", help="force the CPU dry run (also on CUDA)")


def run(args: argparse.Namespace) -> int:
    """Run the checks on CUDA, or the tiny CPU dry run without it; returns the exit code."""
    if torch.cuda.is_available() and not args.cpu_dry_run:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"GPU check on {torch.cuda.get_device_name(device)} (torch {torch.__version__})\n")
        rows = run_checks(
            device,
            (),
            batch_size=args.batch_size,
            warmup=5,
            steps=20,
            generation_batch=32,
            table3_steps=args.steps,
            eval_images=64,
            workers=8,
            budget_s=args.budget_s,
            compile_backend=None if args.no_compile else "inductor",
        )
    else:
        print(
            "No CUDA device: this is NOT the GPU check. Running the same code path at a tiny size on the CPU "
            "(dry run; compiled rows only trace, with the 'eager' backend) so the command is exercised; "
            "numbers below say nothing about GPU speed.\n"
        )
        torch.set_num_threads(1)
        rows = run_checks(
            torch.device("cpu"),
            DRY_RUN_OVERRIDES,
            batch_size=2,
            warmup=1,
            steps=2,
            generation_batch=2,
            table3_steps=2,
            eval_images=2,
            workers=0,
            budget_s=args.budget_s,
            compile_backend=None if args.no_compile else "eager",
        )
    print(format_table(rows))
    return 0
