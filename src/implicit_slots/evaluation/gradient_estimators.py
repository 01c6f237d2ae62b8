"""How close each gradient estimator comes to the implicit gradient on a trained run.

On a few batches, the gradient of the model's training loss with respect to the slot-attention parameters is
computed once per :class:`GradientSetting` (forward solver and budget, gradient estimator, backward budget)
and compared with a *reference*: the implicit-function-theorem gradient (paper Eqs. 1-2) at a forward and a
backward Broyden solve of many iterations. Every setting sees exactly the same random draws: the model runs
under a forked random state seeded with the same seed, so the initial slots, Gumbel noise and dropout masks
(all drawn from the global generators) are identical and the rows differ only in the estimator.

The Gaussian initialiser's mean and scale are left out of the comparison: the Neumann and IFT estimators
never give them a gradient (paper Fig. 2). Per setting the report gives the forward relative residual at the
returned slots, the lowest relative residual of the backward (adjoint) solve ``uᵀ = uᵀ J + g`` and the share
of images whose adjoint stayed at its start ``u = 0`` (the best iterate of a Broyden backward solve that
never improved on it, which sends no gradient through slot attention), and the cosine similarity and norm
ratio of the gradient to the reference; for an IFT row also the cosine to the IFT row with the same forward
solve and the longest backward solve (the bias of a short backward budget alone). The reference's own
residuals tell whether it converged, and a Neumann row of high order from the same forward solve (n
differentiable steps from the fixed point: n terms of the series ``Σ Jⁱ``, by plain back-propagation) checks
it independently of the backward solver wherever the map contracts at the fixed point.

Used by ``implicit-slots inspect gradients RUN_DIR`` (:mod:`implicit_slots.cli.inspect`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from implicit_slots.fixed_point import (
    ForwardSolver,
    GradientEstimator,
    ImplicitGradient,
    NeumannGradient,
    get_gradient,
    get_solver,
)
from implicit_slots.models.base import Batch, ObjectCentricModel
from implicit_slots.slot_attention import SlotAttention


@dataclass(frozen=True)
class GradientSetting:
    """One way to solve and differentiate slot attention.

    Attributes:
        solver: forward solver name ("iteration", "broyden", "anderson").
        iterations: its budget (tolerance 0: always this many evaluations).
        gradient: estimator name ("unrolled", "neumann", "ift").
        backward_iterations: budget of the IFT's Broyden backward solve (IFT only).
        neumann_order: k of the Neumann estimator.
    """

    solver: str
    iterations: int
    gradient: str
    backward_iterations: int | None = None
    neumann_order: int = 1

    def build(self) -> tuple[ForwardSolver, GradientEstimator]:
        """The forward solver and the gradient estimator of this setting."""
        solver = get_solver(self.solver, self.iterations)
        if self.gradient == "ift":
            if self.backward_iterations is None:
                raise ValueError("an 'ift' setting needs backward_iterations")
            return solver, ImplicitGradient("broyden", self.backward_iterations)
        return solver, get_gradient(self.gradient, neumann_order=self.neumann_order)

    def describe(self) -> str:
        """E.g. ``broyden 7 + ift (broyden 30)``."""
        return describe(*self.build())


def describe(solver: ForwardSolver, gradient: GradientEstimator) -> str:
    """A short name of a solver and estimator pair, e.g. ``iteration 7 + neumann 1``."""
    text = f"{solver.name} {solver.max_iterations} + {gradient.name}"
    if isinstance(gradient, NeumannGradient):
        return f"{text} {gradient.order}"
    if isinstance(gradient, ImplicitGradient):
        backward = gradient.backward_solver
        return f"{text} ({backward.name} {backward.max_iterations})"
    return text


def default_settings(budgets: Sequence[int]) -> list[GradientSetting]:
    """The rows of ``inspect gradients``: unrolled, then for plain iteration and Broyden at each forward
    budget, first-order Neumann and the IFT at each backward budget."""
    settings = [GradientSetting("iteration", budget, "unrolled") for budget in budgets]
    for solver in ("iteration", "broyden"):
        for budget in budgets:
            settings.append(GradientSetting(solver, budget, "neumann"))
            settings += [GradientSetting(solver, budget, "ift", backward) for backward in budgets]
    return settings


@dataclass(frozen=True)
class GradientMeasurement:
    """One setting's gradient and what its solves reached.

    Attributes:
        label: the setting's name.
        loss: the training loss, averaged over the images.
        forward_residual: mean over images of the forward relative residual at the returned slots.
        backward_residual: mean over images of the lowest relative residual of the backward solve
            (None without one).
        zero_adjoint_fraction: share of images whose backward solve returned its start ``u = 0`` (None
            without a backward solve).
        gradient: (P,) float64 the flattened gradient of the loss w.r.t. the compared parameters.
        seconds: wall time of the forward and backward passes.
    """

    label: str
    loss: float
    forward_residual: float
    backward_residual: float | None
    zero_adjoint_fraction: float | None
    gradient: Tensor
    seconds: float


@dataclass(frozen=True)
class GradientRow:
    """A measurement next to the reference.

    Attributes:
        measurement: the setting's gradient and residuals.
        cosine: cosine similarity of its gradient to the reference's.
        norm_ratio: ``‖gradient‖ / ‖reference gradient‖``.
        adjoint_cosine: for an IFT row, the cosine to the IFT row with the same forward solver and budget
            and the largest backward budget (what a longer backward solve changes at this forward solve);
            None for other rows.
    """

    measurement: GradientMeasurement
    cosine: float
    norm_ratio: float
    adjoint_cosine: float | None = None


@dataclass(frozen=True)
class GradientReport:
    """The reference and the compared settings."""

    images: int
    parameters: int
    reference: GradientMeasurement
    rows: list[GradientRow]


def compared_parameters(slot_attention: SlotAttention) -> list[nn.Parameter]:
    """The slot-attention parameters every estimator differentiates (all but the initialiser's)."""
    return [
        parameter
        for name, parameter in slot_attention.named_parameters()
        if not name.startswith("initializer.") and parameter.requires_grad
    ]


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global random state (CPU and the model's CUDA device) and seed it with ``seed``."""
    devices = [] if device.type != "cuda" else [device.index if device.index is not None else 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def measure_gradient(
    model: ObjectCentricModel,
    batches: Sequence[Batch],
    solver: ForwardSolver,
    gradient: GradientEstimator,
    *,
    seed: int = 0,
    label: str | None = None,
) -> GradientMeasurement:
    """The gradient of the training loss w.r.t. :func:`compared_parameters` under one solver / estimator.

    The model runs in training mode (restored afterwards), batch ``i`` under the global random state seeded
    with ``seed + i``. The loss is the mean over all images (each batch's loss weighted by its size).

    Args:
        model: the trained model; its ``slot_attention`` module is solved with ``solver`` and ``gradient``.
        batches: batches on the model's device (``batch["image"]`` (B, 3, H, W) and the model's targets).
        solver: the forward solver.
        gradient: the gradient estimator.
        seed: seed of the random draws.
        label: the row's name (default: :func:`describe`).
    """
    if not batches:
        raise ValueError("no batches to measure")
    slot_attention = model.slot_attention
    parameters = compared_parameters(slot_attention)
    device = parameters[0].device
    total = sum(int(batch["image"].shape[0]) for batch in batches)
    summed = [torch.zeros_like(parameter) for parameter in parameters]
    loss_sum, forward_residuals, backward_residuals, zero_adjoints = 0.0, [], [], []
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        with slot_attention.fixed_point_override(solver, gradient):
            for index, batch in enumerate(batches):
                weight = batch["image"].shape[0] / total
                with _seeded(seed + index, device):
                    output = model(batch)
                    loss = model.compute_loss(output, batch).loss * weight
                    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
                for accumulated, grad in zip(summed, grads, strict=True):
                    if grad is not None:
                        accumulated += grad
                loss_sum += float(loss.detach())
                solution = output.slot_attention.solution
                forward_residuals.append(solution.relative_residual.detach().float())
                if solution.backward is not None:
                    lowest, at = lowest_residual(solution.backward.relative_trace.detach().float())
                    backward_residuals.append(lowest)
                    zero_adjoints.append((at == 0).float())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    flat = torch.cat([grad.detach().reshape(-1).double().cpu() for grad in summed])
    return GradientMeasurement(
        label=label if label is not None else describe(solver, gradient),
        loss=loss_sum,
        forward_residual=float(torch.cat(forward_residuals).mean()),
        backward_residual=float(torch.cat(backward_residuals).mean()) if backward_residuals else None,
        zero_adjoint_fraction=float(torch.cat(zero_adjoints).mean()) if zero_adjoints else None,
        gradient=flat,
        seconds=seconds,
    )


def lowest_residual(trace: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, the lowest residual of a solve's trace and its index, NaN entries skipped.

    The solvers never return an iterate whose residual is NaN (it is never "better"), so neither may the
    report: a NaN step in the middle of a backward solve must not hide the finite iterate it returned.

    Args:
        trace: (B, T) relative residuals, index 0 = the start.

    Returns:
        ``(lowest, index)``, each (B,); ``inf`` where every entry is NaN.
    """
    finite_or_inf = torch.where(torch.isnan(trace), torch.full_like(trace, float("inf")), trace)
    lowest, index = finite_or_inf.min(dim=1)
    return lowest, index


def compare_gradients(
    model: ObjectCentricModel,
    batches: Sequence[Batch],
    settings: Sequence[tuple[str, ForwardSolver, GradientEstimator]],
    reference: tuple[ForwardSolver, GradientEstimator],
    *,
    seed: int = 0,
) -> GradientReport:
    """Measure the reference and every ``(label, solver, estimator)`` setting on the same batches and draws.

    Returns:
        The report; a row's cosine is NaN when either gradient is zero or not finite.
    """
    ref = measure_gradient(model, batches, *reference, seed=seed, label="reference: " + describe(*reference))
    measured = [
        measure_gradient(model, batches, solver, gradient, seed=seed, label=label)
        for label, solver, gradient in settings
    ]
    # The IFT row of each forward solve with the largest backward budget: (solver, budget) -> (budget, index).
    longest: dict[tuple[str, int], tuple[int, int]] = {}
    for index, (_, solver, gradient) in enumerate(settings):
        if isinstance(gradient, ImplicitGradient):
            key, budget = (solver.name, solver.max_iterations), gradient.backward_solver.max_iterations
            if key not in longest or budget > longest[key][0]:
                longest[key] = (budget, index)
    rows = []
    for (_, solver, gradient), measurement in zip(settings, measured, strict=True):
        adjoint_cosine = None
        if isinstance(gradient, ImplicitGradient):
            converged = measured[longest[(solver.name, solver.max_iterations)][1]]
            adjoint_cosine = cosine_and_norm_ratio(measurement.gradient, converged.gradient)[0]
        cosine, ratio = cosine_and_norm_ratio(measurement.gradient, ref.gradient)
        rows.append(GradientRow(measurement, cosine, ratio, adjoint_cosine))
    images = sum(int(batch["image"].shape[0]) for batch in batches)
    return GradientReport(images=images, parameters=int(ref.gradient.numel()), reference=ref, rows=rows)


def cosine_and_norm_ratio(gradient: Tensor, reference: Tensor) -> tuple[float, float]:
    """Cosine similarity of two flat gradients and ``‖gradient‖ / ‖reference‖`` (NaN where undefined)."""
    norm, reference_norm = float(gradient.norm()), float(reference.norm())
    if (
        norm == 0
        or reference_norm == 0
        or not (torch.isfinite(gradient).all() and torch.isfinite(reference).all())
    ):
        cosine = float("nan")
    else:
        cosine = float(gradient @ reference) / (norm * reference_norm)
    ratio = norm / reference_norm if reference_norm > 0 else float("nan")
    return cosine, ratio


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(measurement: GradientMeasurement, cosine: str, ratio: str, adjoint_cosine: str) -> str:
    m = measurement
    backward, zero = _optional(m.backward_residual, ".2e"), _optional(m.zero_adjoint_fraction, ".2f")
    return (
        f"| {m.label} | {m.loss:.4g} | {m.forward_residual:.2e} | {backward} | {zero} | {cosine} | {ratio} "
        f"| {adjoint_cosine} | {m.seconds:.2f} |"
    )


def format_gradient_table(report: GradientReport) -> list[str]:
    """The Markdown table of a report: the reference first, then one row per setting."""
    ref = report.reference
    lines = [
        "| setting | loss | forward residual | backward residual | adjoint = 0 | cosine to reference "
        "| norm ratio | cosine to longest backward | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        _cells(ref, "1", f"1 (‖g‖ = {ref.gradient.norm():.3g})", "-"),
    ]
    for row in report.rows:
        adjoint_cosine = _optional(row.adjoint_cosine, ".3f")
        lines.append(_cells(row.measurement, f"{row.cosine:.3f}", f"{row.norm_ratio:.3g}", adjoint_cosine))
    return lines
