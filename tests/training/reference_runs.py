"""Fixed-seed tiny runs whose every logged number and final checkpoint are recorded as test data.

``tests/training/data/reference_runs.pt`` holds, for each run below, the ``metrics.jsonl`` records and the
final ``checkpoints/last.pt`` that the engine wrote. ``test_training_reference.py`` trains the same runs
and requires bit-identical results: a refactor of the loop must not change what it computes.

The runs together touch every phase of a step: learning-rate warm-up and decay, a scheduled model
hyperparameter, l2 and inf clipping, a NaN step that is skipped, diagnostics (residuals, solver steps,
Jacobian norm, gradient norms), validation with plateau decay, periodic checkpoints, logging every step
and every few steps, and the IFT estimator whose backward statistics are filled in during ``backward()``.

Bit-identity holds for one torch build on one kind of CPU: processors with another vector instruction set
or vendor run other kernels, whose last bits differ and grow over a few Adam steps. So there is one record
per kind of CPU the project runs on (``reference_runs.pt``: the first machines; ``reference_runs_<kind>.pt``:
the others, named by :func:`cpu_kind`), and a run must equal one of them bit for bit.

Record this CPU's kind (once per new kind of machine, from code that passes against an existing record on
its own machine), or regenerate every record (only when a change of the numbers is intended, and say why in
the commit)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/training/reference_runs.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from tiny_training_setup import register_tiny_model, tiny_dataset_factory, write_config

from implicit_slots.config import load_config
from implicit_slots.experiment.checkpoint import load_checkpoint
from implicit_slots.training import train
from implicit_slots.training.logger import read_metrics

RECORD_PATH = Path(__file__).resolve().parent / "data" / "reference_runs.pt"

REFERENCE_RUNS: dict[str, list[str]] = {
    # Logs every step: every loss, gradient norm and learning rate is compared.
    "every_step": [
        "training.max_steps=7",
        "training.checkpoint_every=4",
        "training.log_every=1",
        "training.optimizer.warmup_steps=3",
        "training.lr_decay.kind=plateau",
        "training.lr_decay.patience=1",
        "training.lr_decay.min_delta=1e9",
        "training.validation.every=3",
        "training.grad_clip.norm=l2",
        "training.grad_clip.max_norm=0.05",
        "training.hyperparameter_schedules.temperature.kind=cosine",
        "training.hyperparameter_schedules.temperature.start=1.0",
        "training.hyperparameter_schedules.temperature.end=0.5",
        "training.hyperparameter_schedules.temperature.steps=5",
        "model.poison_loss_calls=[3]",
        "diagnostics.every=2",
        "diagnostics.jacobian_iterations=3",
    ],
    # Logs every third step (and the skipped step): quiet steps must not change the trajectory.
    "sparse_logging": [
        "model.variant=IB",
        "training.max_steps=8",
        "training.checkpoint_every=5",
        "training.log_every=3",
        "training.grad_clip.norm=inf",
        "training.grad_clip.max_norm=0.01",
        "training.lr_decay.kind=exponential",
        "training.lr_decay.half_life=4",
        "model.poison_grad_calls=[5]",
        "diagnostics.every=4",
        "diagnostics.jacobian=false",
    ],
}


def run_reference(name: str, folder: Path) -> dict[str, Any]:
    """Train reference run ``name`` into ``folder``; its metrics records and final checkpoint."""
    config = load_config(write_config(folder / f"{name}.yaml"), REFERENCE_RUNS[name])
    run_dir = folder / name
    train(config, run_dir, dataset_factory=tiny_dataset_factory)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    checkpoint.pop("config")  # holds nothing computed; compared through the run's own config instead
    return {"metrics": read_metrics(run_dir / "metrics.jsonl"), "checkpoint": checkpoint}


def cpu_kind() -> str:
    """This CPU's kernel family: torch's vector instruction set and the vendor, e.g. ``avx2-authenticamd``."""
    vendor = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip().lower()
                break
    return f"{torch.backends.cpu.get_cpu_capability().lower()}-{vendor}"


def record_paths() -> list[Path]:
    """Every stored record: the first machines' and one per further kind of CPU."""
    return sorted(RECORD_PATH.parent.glob(RECORD_PATH.stem + "*" + RECORD_PATH.suffix))


def record() -> None:
    """Write this CPU kind's record from the current code."""
    register_tiny_model()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        runs = {name: run_reference(name, Path(folder)) for name in REFERENCE_RUNS}
    path = RECORD_PATH.with_name(f"{RECORD_PATH.stem}_{cpu_kind()}{RECORD_PATH.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"torch_version": str(torch.__version__), "cpu_kind": cpu_kind(), "runs": runs}, path)
    print(f"wrote {path} (torch {torch.__version__})")


if __name__ == "__main__":
    record()
