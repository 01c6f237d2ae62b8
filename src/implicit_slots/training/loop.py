"""The training loop (see docs/training.md).

``train(config, run_dir)`` builds the model, optimizer, schedules and data from an
:class:`~implicit_slots.config.ExperimentConfig`, then runs ``training.max_steps`` steps. :func:`_train`
reads as the algorithm; each step is

1. set every group's learning rate and the scheduled model hyperparameters for this step;
2. forward + loss (bf16 autocast when ``training.precision`` is ``bf16``), backward;
3. if the loss or the gradient is NaN/Inf (on any rank), skip the update (counted, logged; too many in a
   row stop the run); otherwise clip (``training.grad_clip``) and take the optimizer step;
4. log, run diagnostics / validation / images when due, write ``checkpoints/last.pt`` when due.

Numbers reach the host once per step (the fused skip/stop decision of 3.) and otherwise only on the steps
that log; the slot-attention residual and other diagnostics are computed only on the steps that log them.

The same code runs single-process and under ``torchrun`` (DDP): ranks shard the data, rank 0 logs and
writes checkpoints. One process trains a run folder at a time (an OS lock, :mod:`.lock`). A stop signal
(SIGTERM, SIGUSR1, SIGINT, :mod:`.stop`) finishes the current step, writes a checkpoint and returns;
every rank stops at the same step.

Set-up and resume are in :mod:`.run`, the measurements of logging steps (diagnostics, validation) in
:mod:`.measure`; this module holds the loop and the phases of a step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from implicit_slots.config import ExperimentConfig, config_to_dict
from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,  # noqa: F401 (re-exported: implicit_slots.reproduce imports it from here)
    CheckpointWriteError,
    capture_rng_state,
    save_checkpoint_atomic,
)
from implicit_slots.experiment.datasets import DatasetFactory
from implicit_slots.experiment.models import build_model  # noqa: F401 (re-exported for benchmarks/)
from implicit_slots.models.base import ModelOutput, ObjectCentricModel
from implicit_slots.slot_attention import set_residual_recording
from implicit_slots.training.distributed import DistributedContext, setup_distributed
from implicit_slots.training.gradients import clip_gradients, total_gradient_norm
from implicit_slots.training.measure import (
    isolated_rng,
    slot_attention_diagnostics,
    to_device,
    validation_loss,
)
from implicit_slots.training.run import TrainingRun, TrainingSetupError, run_folder_lock, set_up_run
from implicit_slots.training.schedules import hyperparameter_values
from implicit_slots.training.stop import STOP_SIGNALS, StopRequest

__all__ = [
    "DIVERGED_EXIT_CODE",
    "INTERRUPTED_EXIT_CODE",
    "STOP_SIGNALS",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingSetupError",
    "train",
]


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps had a NaN/Inf loss or gradient; the last good state was checkpointed."""


DIVERGED_EXIT_CODE = 3
"""``implicit-slots train``'s exit code after a :class:`TrainingDivergedError` (1 is a crash, 2 a bad
command line or config)."""

INTERRUPTED_EXIT_CODE = 4
"""``implicit-slots train``'s exit code after a stop signal (SIGTERM, SIGUSR1, SIGINT): the step in progress
was finished and checkpointed, and ``train --resume`` continues the run bit-identically. A job script
requeues on this code (docs/training.md); it differs from a crash (1), a bad command line or config (2),
a divergence (3) and from a process killed by a signal it did not handle (128 + the signal's number)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: steps completed (the step of the last checkpoint).
        status: ``"completed"`` or ``"interrupted"`` (a stop signal: see :data:`STOP_SIGNALS`).
        signal: the stop signal this process received, if any (under DDP the rank that was signalled
            may be another one; ``status`` is the same on every rank).
        last_loss: the loss of the last step (None when no step ran).
        last_validation_loss: the last validation loss, if validation ran.
        skipped_steps: steps skipped for NaN/Inf over the whole run (resumed parts included).
        checkpoint: path of ``checkpoints/last.pt`` (None on ranks > 0).
        model: the trained model (unwrapped from DDP), on its training device, in eval mode.
    """

    run_dir: Path
    step: int
    status: str
    signal: int | None
    last_loss: float | None
    last_validation_loss: float | None
    skipped_steps: int
    checkpoint: Path | None
    model: ObjectCentricModel


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    *,
    dataset_factory: DatasetFactory | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (or continue the run there with ``resume=True``).

    Args:
        config: a validated experiment config.
        run_dir: the run folder (created when new); holds config.yaml, metrics.jsonl, TensorBoard events
            and checkpoints/last.pt.
        resume: continue from ``run_dir/checkpoints/last.pt``: model, optimizer, schedules, step, data
            position and every RNG state are restored, so on CPU the next steps are bit-identical to an
            uninterrupted run (``config`` may change e.g. ``training.max_steps``).
        dataset_factory: ``(DataConfig, split) -> Dataset``; default
            :func:`implicit_slots.experiment.datasets.build_dataset_split`.
        command: the command line, recorded in config.yaml's provenance.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingSetupError: the config does not fit the model, or the run folder state does not fit
            ``resume`` (a fresh run into a folder that has a checkpoint, or a resume without one).
        TrainingDivergedError: ``training.max_consecutive_bad_steps`` NaN/Inf steps in a row.
        CheckpointWriteError: a checkpoint could not be written (e.g. a full disk); the previous one is
            intact.
    """
    ctx = setup_distributed(config.training.device)
    try:
        result = _train(config, Path(run_dir), resume, dataset_factory, command, ctx)
        # A rank that destroys the process group while another still finishes its last collective can
        # abort at exit ("terminate called without an active exception", seen in the 2-process test).
        ctx.synchronize()
        return result
    finally:
        ctx.shutdown()


def _train(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    dataset_factory: DatasetFactory | None,
    command: str | None,
    ctx: DistributedContext,
) -> TrainResult:
    """The algorithm: set up (or resume), then step, report and checkpoint until ``max_steps``."""
    with run_folder_lock(run_dir, ctx):
        run = set_up_run(config, run_dir, resume, dataset_factory, command, ctx)
        with StopRequest() as stop, contextlib.closing(run.logger):
            while run.counters.step < config.training.max_steps:
                step = _training_step(run, stop)  # schedules, batch, forward, loss, backward, clip, update
                _report(run, step)  # log, validate, images when due
                _stop_if_diverged(run)
                if step.stop or _due(run.counters.step, config.training.checkpoint_every):
                    _write_checkpoint(run)
                if step.stop:
                    _announce_interruption(run, stop)
                    break
            if run.last_checkpoint_step != run.counters.step:
                _write_checkpoint(run)
        return _finish(run, stop)


# ---------------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Step:
    """What one training step leaves for reporting.

    Attributes:
        batch: the batch (on the device).
        output: the model output of the training forward.
        losses: the loss and its terms.
        grad_norm: total l2 gradient norm before clipping (scalar tensor).
        learning_rates: group name -> learning rate used.
        hyperparameters: scheduled model hyperparameters used.
        skipped: the loss or gradient was NaN/Inf on some rank; no update was made.
        stop: some rank received a stop signal; the run checkpoints and ends after this step.
        diagnostics: diagnostics computed before the update (empty unless due).
    """

    batch: dict[str, Tensor]
    output: ModelOutput
    losses: Any
    grad_norm: Tensor
    learning_rates: dict[str, float]
    hyperparameters: dict[str, float]
    skipped: bool
    stop: bool
    diagnostics: dict[str, float]


def _training_step(run: TrainingRun, stop: StopRequest) -> _Step:
    """Schedules, batch, forward, loss, backward; then skip the update (NaN/Inf) or clip and update."""
    t = run.config.training
    diagnostics_due = _due(run.counters.step + 1, run.config.diagnostics.every)
    set_residual_recording(run.model, diagnostics_due)  # the residual costs a cell call; read only then
    learning_rates, hyperparameters = _apply_schedules(run)
    batch = to_device(run.stream.next(), run.ctx.device)
    with run.autocast():
        output = run.ddp_model(batch)
        losses = run.model.compute_loss(output, batch)
    losses.loss.backward()

    grad_norm = total_gradient_norm(run.params)  # stays on the device until a step that logs
    skipped, stop_now = _agree_on_skip_and_stop(run, losses.loss, grad_norm, stop)
    diagnostics: dict[str, float] = {}
    if diagnostics_due and not skipped:
        diagnostics = _diagnostics(run, output, learning_rates)
    if skipped:
        _skip_update(run)
    else:
        run.counters.consecutive_bad = 0
        clip_gradients(run.params, t.grad_clip.norm, t.grad_clip.max_norm, l2_norm=grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.counters.step += 1
    return _Step(
        batch, output, losses, grad_norm, learning_rates, hyperparameters, skipped, stop_now, diagnostics
    )


def _apply_schedules(run: TrainingRun) -> tuple[dict[str, float], dict[str, float]]:
    """Set this step's learning rate of every group and the scheduled model hyperparameters."""
    step = run.counters.step
    learning_rates = run.lr_schedule.learning_rates(step)
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rates[group["name"]]
    hyperparameters = hyperparameter_values(run.config.training.hyperparameter_schedules, step)
    if hyperparameters:
        run.model.set_hyperparameters(hyperparameters)
    return learning_rates, hyperparameters


def _agree_on_skip_and_stop(
    run: TrainingRun, loss: Tensor, grad_norm: Tensor, stop: StopRequest
) -> tuple[bool, bool]:
    """(skip this update, stop after this step), agreed over all ranks.

    This is the step's one read from the device: whether to take the optimizer step must be known on the
    host (an Adam update cannot be undone on the device), so both finiteness checks, and under DDP every
    rank's stop request, travel in one small tensor.
    """
    bad = torch.stack([loss.detach().float(), grad_norm.float()]).isfinite().logical_not().any()
    if not run.ctx.distributed:
        return bool(bad), stop.signal is not None
    requested = torch.tensor(float(stop.signal is not None), device=bad.device)
    bad_count, stop_count = run.ctx.all_reduce_sum(torch.stack([bad.float(), requested])).tolist()
    return bad_count > 0, stop_count > 0


def _skip_update(run: TrainingRun) -> None:
    """Drop this step's gradients and count the step as bad."""
    run.optimizer.zero_grad(set_to_none=True)
    run.counters.consecutive_bad += 1
    run.counters.total_bad += 1
    run.logger.message(
        f"step {run.counters.step + 1}: non-finite loss or gradient, update skipped "
        f"({run.counters.consecutive_bad} in a row, {run.counters.total_bad} in total)"
    )


def _diagnostics(run: TrainingRun, output: ModelOutput, learning_rates: dict[str, float]) -> dict[str, float]:
    """Gradient norms per group (before clipping), slot-attention diagnostics and learning rates."""
    from implicit_slots.diagnostics import gradient_norms

    values = {f"grad_norm/{k}": v for k, v in gradient_norms(run.groups).items()}
    own_output = run.ddp_outputs[0] if run.ctx.distributed else output
    values.update(slot_attention_diagnostics(run.model, own_output, run.config, run.ctx))
    values.update({f"lr/{name}": lr for name, lr in learning_rates.items()})
    return values


# ---------------------------------------------------------------------------------------------------
# Reporting, checkpoints, end
# ---------------------------------------------------------------------------------------------------


def _due(step: int, every: int) -> bool:
    """True when a periodic event with period ``every`` (0: never) falls on ``step``."""
    return every > 0 and step % every == 0


def _report(run: TrainingRun, step: _Step) -> None:
    """Log the step (every ``log_every`` steps and every skipped step), validate and draw images when due."""
    t, diag, ctx = run.config.training, run.config.diagnostics, run.ctx
    now = run.counters.step
    record = dict(step.diagnostics)
    if _due(now, t.log_every) or step.skipped:
        record.update(_training_scalars(run, step))
        run.logger.progress(now, run.last_loss)
    else:
        run.logger.progress(now, None)
    if _due(now, t.validation.every):
        values = validation_loss(run.model, run.val_set, run.config, ctx, run.autocast)
        record.update(values)
        run.last_validation_loss = values["val/loss"]
        if run.plateau is not None and run.plateau.update(run.last_validation_loss):
            run.logger.message(f"step {now}: validation plateau, learning-rate factor {run.plateau.decay:g}")
        record["lr_decay_factor"] = run.lr_schedule.decay_factor(now)
    if _due(now, diag.images_every) and ctx.is_main:
        with isolated_rng(ctx.device), torch.no_grad():
            images = run.model.visualise(step.output, step.batch)
        run.logger.images(now, {k: v[: diag.max_images] for k, v in images.items()})
    run.logger.log(now, record)


def _training_scalars(run: TrainingRun, step: _Step) -> dict[str, float]:
    """Loss and terms (mean over ranks), gradient norm, learning rates, hyperparameters, skipped steps."""
    losses = step.losses
    scalars = torch.stack(
        [losses.loss.detach().float(), *(v.detach().float() for v in losses.terms.values())]
    )
    scalars = run.ctx.all_reduce_sum(scalars) / run.ctx.world_size
    loss, *terms, grad_norm = torch.cat([scalars, step.grad_norm.float().reshape(1)]).tolist()
    run.last_loss = loss
    record = {"loss": loss, **dict(zip(losses.terms, terms)), "grad_norm": grad_norm}
    record.update({f"lr/{name}": lr for name, lr in step.learning_rates.items()})
    record.update({f"hyper/{name}": value for name, value in step.hyperparameters.items()})
    record["skipped_steps"] = float(run.counters.total_bad)
    return record


def _stop_if_diverged(run: TrainingRun) -> None:
    """After ``max_consecutive_bad_steps`` skipped steps in a row: checkpoint and raise."""
    limit = run.config.training.max_consecutive_bad_steps
    if run.counters.consecutive_bad < limit:
        return
    _write_checkpoint(run)
    raise TrainingDivergedError(
        f"stopping at step {run.counters.step}: {run.counters.consecutive_bad} consecutive steps had a "
        f"NaN/Inf loss or gradient (training.max_consecutive_bad_steps={limit}); the last finite state is "
        f"in {run.checkpoint_path}. Lower the learning rate or enable training.grad_clip, then resume."
    )


def _write_checkpoint(run: TrainingRun) -> Path | None:
    """Write the full training state to ``checkpoints/last.pt`` (every rank gives its RNG, rank 0 writes)."""
    rng_states = run.ctx.all_gather_object(capture_rng_state(run.ctx.device))
    run.last_checkpoint_step = run.counters.step
    failure: CheckpointWriteError | None = None
    path: Path | None = None
    if run.ctx.is_main:
        try:
            path = save_checkpoint_atomic(_checkpoint_state(run, rng_states), run.checkpoint_path)
        except CheckpointWriteError as error:
            failure = error
    if run.ctx.distributed:  # every rank ends the run when rank 0 could not write
        failed = run.ctx.all_reduce_sum(torch.tensor([float(failure is not None)]))
        if failure is None and float(failed[0]) > 0:
            raise CheckpointWriteError(f"rank 0 could not write the checkpoint {str(run.checkpoint_path)!r}")
    if failure is not None:
        raise failure
    return path


def _checkpoint_state(run: TrainingRun, rng_states: list[object]) -> dict[str, Any]:
    """The checkpoint dict of the current step (layout: :mod:`implicit_slots.experiment.checkpoint`)."""
    c, t = run.counters, run.config.training
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": c.step,
        "world_size": run.ctx.world_size,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "plateau": run.plateau.state_dict() if run.plateau is not None else None,
        "hyperparameters": hyperparameter_values(t.hyperparameter_schedules, c.step),
        "data": {"epoch": run.stream.state.epoch, "position": run.stream.state.position * run.ctx.world_size},
        "rng": rng_states,
        "bad_steps": {"consecutive": c.consecutive_bad, "total": c.total_bad},
        "config": config_to_dict(run.config),
    }


def _announce_interruption(run: TrainingRun, stop: StopRequest) -> None:
    """Mark the run interrupted and log where its checkpoint is and how to continue."""
    run.interrupted = True
    run.logger.message(
        f"interrupted at step {run.counters.step} by {stop.describe()}: checkpoint written to "
        f"{run.checkpoint_path}; continue with `implicit-slots train --resume {run.run_dir}`"
    )


def _finish(run: TrainingRun, stop: StopRequest) -> TrainResult:
    """The model in eval mode, measuring its residual again, and the :class:`TrainResult`."""
    run.model.eval()
    set_residual_recording(run.model, True)
    return TrainResult(
        run_dir=run.run_dir,
        step=run.counters.step,
        status="interrupted" if run.interrupted else "completed",
        signal=stop.signal,
        last_loss=run.last_loss,
        last_validation_loss=run.last_validation_loss,
        skipped_steps=run.counters.total_bad,
        checkpoint=run.checkpoint_path if run.ctx.is_main else None,
        model=run.model,
    )
