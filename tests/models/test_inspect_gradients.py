"""``implicit-slots inspect gradients``: estimators against the converged implicit gradient.

On a small contractive float64 problem the comparison must reproduce what the theory says (the IFT gradient
at a converged backward solve and back-propagation through many iterations both equal the reference, while
first-order Neumann does not); on a tiny SLATE run folder the command prints every row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from implicit_slots.cli import main
from implicit_slots.evaluation import gradient_estimators as script
from implicit_slots.fixed_point import FixedPointIteration, UnrolledGradient, get_solver
from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.slot_attention import SlotAttention


class SlotRegression(ObjectCentricModel):
    """Slot attention (a contraction) on the pixels of a (B, 3, 4, 4) image, regressed onto target slots."""

    def __init__(self) -> None:
        super().__init__()
        self.slot_attention = SlotAttention(3, num_slots=3, slot_dim=8, mlp_hidden_dim=16, num_iterations=3)
        with torch.no_grad():  # weights scaled down so that the map contracts (iteration converges to 1e-16)
            for parameter in self.slot_attention.cell.parameters():
                if parameter.dim() > 1:
                    parameter.mul_(0.3)
        self.register_buffer("target", torch.randn(3, 8))

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = batch["image"].flatten(2).transpose(1, 2)  # (B, 16, 3)
        return ModelOutput(slot_attention=self.slot_attention(inputs))

    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        slots = output.slot_attention.slots  # (B, K, D)
        target: Tensor = self.target  # type: ignore[assignment]
        return LossOutput(loss=(slots - target).square().sum() / slots.shape[0])


@pytest.fixture
def problem() -> tuple[SlotRegression, list[dict[str, Tensor]]]:
    model = SlotRegression().double().eval()
    batches = [
        {"image": torch.rand(3, 3, 4, 4, dtype=torch.float64)},
        {"image": torch.rand(2, 3, 4, 4).double()},
    ]
    return model, batches


def test_converged_estimators_agree_with_the_reference_and_neumann_does_not(
    problem: tuple[SlotRegression, list[dict[str, Tensor]]],
) -> None:
    model, batches = problem
    settings = [
        script.GradientSetting("iteration", 100, "ift", 100),
        script.GradientSetting("iteration", 100, "unrolled"),
        script.GradientSetting("iteration", 100, "neumann"),
        script.GradientSetting("broyden", 30, "ift", 7),
    ]
    reference = script.GradientSetting("broyden", 100, "ift", 100).build()
    report = script.compare_gradients(
        model, batches, [(s.describe(), *s.build()) for s in settings], reference, seed=3
    )
    # The reference converged forward and backward (to the backward solver's default tolerance, 1e-6).
    assert report.reference.forward_residual < 1e-12
    assert report.reference.backward_residual is not None and report.reference.backward_residual < 1e-6
    assert report.reference.zero_adjoint_fraction == 0
    ift, unrolled, neumann, short = report.rows
    for row in (ift, unrolled):  # unrolled: plain back-propagation through 100 steps, no backward solver
        assert row.cosine == pytest.approx(1, abs=1e-10) and row.norm_ratio == pytest.approx(1, abs=1e-5)
    assert unrolled.measurement.backward_residual is None
    assert neumann.norm_ratio < 0.999 or neumann.cosine < 0.999  # the truncation is visible
    # A short backward solve is a visibly different gradient, and its residual says so.
    assert short.measurement.backward_residual is not None and short.measurement.backward_residual > 1e-8
    assert short.cosine < 1 - 1e-8
    assert report.images == 5 and report.parameters == int(report.reference.gradient.numel())


def test_every_setting_sees_the_same_draws(problem: tuple[SlotRegression, list[dict[str, Tensor]]]) -> None:
    model, batches = problem
    solver, gradient = script.GradientSetting("iteration", 5, "neumann").build()
    first = script.measure_gradient(model, batches, solver, gradient, seed=7)
    again = script.measure_gradient(model, batches, solver, gradient, seed=7)
    other = script.measure_gradient(model, batches, solver, gradient, seed=8)
    assert torch.equal(first.gradient, again.gradient) and first.loss == again.loss
    assert not torch.equal(first.gradient, other.gradient)
    assert not model.training  # the mode is restored


def test_fixed_point_override_restores_the_module_and_checks_the_pair() -> None:
    module = SlotAttention(4, num_slots=2, slot_dim=4, mlp_hidden_dim=8, num_iterations=3, variant="IN")
    solver, gradient = module.solver, module.gradient
    with module.fixed_point_override(FixedPointIteration(9), UnrolledGradient()):
        assert module.solver.max_iterations == 9 and module.gradient.name == "unrolled"
    assert module.solver is solver and module.gradient is gradient
    with (
        pytest.raises(ValueError, match="'unrolled' gradient needs the 'iteration' solver, got 'broyden'"),
        module.fixed_point_override(get_solver("broyden", 5), UnrolledGradient()),
    ):
        pass
    assert module.solver is solver


def test_inspect_gradients_prints_every_row(tiny_slate_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["inspect", "gradients", str(tiny_slate_run), "--images", "4", "--batch-size", "3"]
    assert main([*argv, "--budgets", "2", "3", "--reference-iterations", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| setting |")))
    assert lines[header - 1].startswith(f"{tiny_slate_run} (step 1, slate IN, test, 4 images,")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[header + 2 :]]
    labels = [row[0] for row in rows]
    # reference, the run's own, its Neumann cross-check, unrolled at 2 and 3, then per solver and budget
    # Neumann and IFT at 2 and 3
    assert labels[:6] == [
        "reference: broyden 5 + ift (broyden 5)",
        "run: iteration 2 + neumann 1",
        "broyden 5 + neumann 5",
        "iteration 2 + unrolled",
        "iteration 3 + unrolled",
        "iteration 2 + neumann 1",
    ]
    assert len(rows) == 3 + 2 + 2 * 2 * 3 and labels[-1] == "broyden 3 + ift (broyden 3)"
    assert all(len(row) == 9 for row in rows)
    assert all(-1.0 <= float(row[5]) <= 1.0 for row in rows[1:])
    assert rows[-1][7] == "1.000" and rows[-2][7] != "-" and rows[-3][7] == "-"  # IFT rows only


def test_inspect_gradients_names_a_missing_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "gradients", str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder: no config.yaml" in capsys.readouterr().err
    assert main(["inspect", "gradients", str(tmp_path), "--budgets", "7", "0"]) == 2
    assert "--budgets must all be >= 1, got [7, 0]" in capsys.readouterr().err


def test_lowest_residual_skips_nan_steps() -> None:
    """A NaN step inside a backward solve does not hide the finite iterate the solver returned."""
    trace = torch.tensor([[1.0, float("nan"), 0.25, 0.5], [1.0, 0.75, float("nan"), float("nan")]])
    lowest, index = script.lowest_residual(trace)
    assert lowest.tolist() == [0.25, 0.75]
    assert index.tolist() == [2, 1]
    all_nan = torch.full((1, 3), float("nan"))
    assert script.lowest_residual(all_nan)[0].item() == float("inf")
