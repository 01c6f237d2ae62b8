"""What the loop measures on the steps that log: slot-attention diagnostics and the validation loss.

Everything here reads numbers back from the device, so the loop calls it only when it is due.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from implicit_slots.config import (
    ExperimentConfig,
)
from implicit_slots.models.base import ModelOutput, ObjectCentricModel
from implicit_slots.training.data import (
    validation_batches,
)
from implicit_slots.training.distributed import DistributedContext
from implicit_slots.training.run import TrainingSetupError

__all__ = ["isolated_rng", "slot_attention_diagnostics", "solver_statistics", "to_device", "validation_loss"]


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of ``batch`` on ``device`` (asynchronous copies from pinned memory)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run diagnostics/validation/images without moving the training RNG (keeps runs comparable)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def slot_attention_diagnostics(
    model: ObjectCentricModel, output: ModelOutput, config: ExperimentConfig, ctx: DistributedContext
) -> dict[str, float]:
    """Forward residual (mean/max over the batch and ranks), solver steps and the cell's Jacobian norm.

    A model without slot attention (the ``dvae`` stage of two-stage SLATE) has none: nothing is logged.
    """
    sa_output = output.slot_attention
    values: dict[str, float] = {}
    if sa_output is None:
        return values
    residual = sa_output.relative_residual.detach().float()  # (B,)
    stats = ctx.all_reduce_sum(torch.stack([residual.sum(), torch.tensor(float(residual.numel()))]).cpu())
    values["diag/residual_mean"] = float(stats[0] / stats[1])
    values["diag/residual_max"] = float(ctx.all_reduce_max(residual.max().reshape(1).cpu())[0])
    values.update(solver_statistics(sa_output))
    if config.diagnostics.jacobian and ctx.is_main:
        from implicit_slots.diagnostics import slot_attention_jacobian_norm

        n = config.diagnostics.jacobian_max_samples
        subset = replace(
            sa_output,
            slots=sa_output.slots[:n].detach().float(),
            inputs=sa_output.inputs[:n].detach().float(),
        )
        generator = torch.Generator(ctx.device).manual_seed(0)
        with isolated_rng(ctx.device), torch.autocast(ctx.device.type, enabled=False):
            norms = slot_attention_jacobian_norm(
                model.slot_attention, subset, config.diagnostics.jacobian_iterations, generator
            ).float()  # (n,)
        values["diag/jacobian_norm_mean"] = float(norms.mean())
        values["diag/jacobian_norm_max"] = float(norms.max())
    return values


def solver_statistics(sa_output: Any) -> dict[str, float]:
    """Forward (and, after backward, IFT backward) solver steps from ``output.slot_attention.solution``.

    Reads a :class:`~implicit_slots.fixed_point.types.Solution`; any output without one logs nothing.
    """
    solution = getattr(sa_output, "solution", None)
    values: dict[str, float] = {}
    for name in ("forward", "backward"):
        stats = getattr(solution, name, None)
        if stats is None:
            continue
        values[f"diag/{name}_solver_steps"] = float(stats.steps)
        converged = getattr(stats, "converged", None)
        if isinstance(converged, Tensor) and converged.numel() > 0:
            values[f"diag/{name}_converged_fraction"] = float(converged.float().mean())
        fallbacks = getattr(stats, "fallbacks", None)
        if isinstance(fallbacks, Tensor) and fallbacks.numel() > 0:
            values[f"diag/{name}_fallbacks_mean"] = float(fallbacks.float().mean())
    return values


@torch.no_grad()
def validation_loss(
    model: ObjectCentricModel,
    dataset: Any,
    config: ExperimentConfig,
    ctx: DistributedContext,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> dict[str, float]:
    """Mean validation loss and terms over the split (every rank its shard, summed over ranks)."""
    v = config.training.validation
    batch_size = max(1, (v.batch_size or config.training.batch_size) // ctx.world_size)
    model.eval()
    totals: dict[str, Tensor] = {}
    count = torch.zeros((), dtype=torch.float64)
    with isolated_rng(ctx.device):
        for batch in validation_batches(dataset, batch_size, v.num_batches, ctx.rank, ctx.world_size):
            batch = to_device(batch, ctx.device)
            with autocast():
                output = model(batch)
                losses = model.compute_loss(output, batch)
            size = next(iter(batch.values())).shape[0]
            for key, value in {"loss": losses.loss, **losses.terms}.items():
                totals[key] = (
                    totals.get(key, torch.zeros((), dtype=torch.float64))
                    + value.detach().double().cpu() * size
                )
            count += size
    model.train()
    keys = sorted(totals)
    summed = ctx.all_reduce_sum(torch.stack([count, *(totals[k] for k in keys)]))
    if float(summed[0]) == 0:
        raise TrainingSetupError(f"validation split {v.split!r} yielded no batches")
    return {f"val/{key}": float(summed[i + 1] / summed[0]) for i, key in enumerate(keys)}
