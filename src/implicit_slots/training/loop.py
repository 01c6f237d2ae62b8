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
(SIGTERM, SIGUSR1, SIGINT) finishes the current step, writes a checkpoint and returns; every rank stops
at the same step.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import implicit_slots
from implicit_slots.config import (
    ExperimentConfig,
    OptimizerConfig,
    ProvenanceConfig,
    config_to_dict,
    save_config,
)
from implicit_slots.experiment import datasets as experiment_datasets
from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_NAME,
    CheckpointWriteError,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint_atomic,
    seed_everything,
)
from implicit_slots.experiment.datasets import DatasetFactory
from implicit_slots.experiment.models import ExperimentSetupError, build_model
from implicit_slots.models.base import ModelOutput, ObjectCentricModel
from implicit_slots.slot_attention import set_residual_recording
from implicit_slots.training.data import (
    BatchStream,
    SamplerState,
    ShardedEpochOrder,
    validation_batches,
)
from implicit_slots.training.distributed import DistributedContext, register_output_pytrees, setup_distributed
from implicit_slots.training.gradients import clip_gradients, total_gradient_norm
from implicit_slots.training.lock import RunFolderBusyError, RunFolderLock
from implicit_slots.training.logger import RunLogger
from implicit_slots.training.schedules import LearningRateSchedule, PlateauState, hyperparameter_values

__all__ = [
    "DIVERGED_EXIT_CODE",
    "INTERRUPTED_EXIT_CODE",
    "STOP_SIGNALS",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingSetupError",
    "train",
]

# Training randomness of rank r is seeded with seed + r * RANK_SEED_STRIDE, so ranks draw different
# per-sample slot initialisations and dropout masks while parameters start identical on every rank.
RANK_SEED_STRIDE = 1_000_003


class TrainingSetupError(ExperimentSetupError):
    """The config does not fit the model, the data or the run folder, or the folder is busy (names the key,
    path or process)."""


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

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
"""Signals that make :func:`train` finish the current step, checkpoint it and return (SLURM sends SIGTERM
before a preemption's SIGKILL, or SIGUSR1 at a configured time with ``--signal=USR1@SECONDS``)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: steps completed (the step of the last checkpoint).
        status: ``"completed"`` or ``"interrupted"`` (a stop signal: see :data:`STOP_SIGNALS`).
        signal: the signal number that interrupted the run, if any.
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


def _build_optimizer(
    model: ObjectCentricModel, config: OptimizerConfig
) -> tuple[torch.optim.Optimizer, dict[str, list[nn.Parameter]]]:
    groups = {
        name: [p for p in params if p.requires_grad] for name, params in model.parameter_groups().items()
    }
    unknown = sorted(set(config.groups) - set(groups))
    if unknown:
        raise TrainingSetupError(
            f"key 'training.optimizer.groups.{unknown[0]}': model {type(model).__name__} has no parameter "
            f"group {unknown[0]!r}; its groups: {sorted(groups)}"
        )
    seen: set[int] = set()
    for name, params in groups.items():
        if any(id(p) in seen for p in params):
            raise TrainingSetupError(f"parameter group {name!r} shares parameters with another group")
        seen.update(id(p) for p in params)
    param_groups = []
    for name, params in groups.items():
        override = config.groups.get(name)
        weight_decay = config.weight_decay
        if override is not None and override.weight_decay is not None:
            weight_decay = override.weight_decay
        param_groups.append({"params": params, "name": name, "lr": 0.0, "weight_decay": weight_decay})
    betas = (float(config.betas[0]), float(config.betas[1]))
    optimizer_type = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return optimizer_type(param_groups, lr=config.lr, betas=betas, eps=config.eps), groups


def _provenance(command: str | None) -> ProvenanceConfig:
    source = Path(implicit_slots.__file__).resolve().parent
    commit: str | None = None
    dirty: bool | None = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return ProvenanceConfig(
        package_version=implicit_slots.__version__,
        git_commit=commit or None,
        git_dirty=dirty,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
    )


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@contextlib.contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Run diagnostics/validation/images without moving the training RNG (keeps runs comparable)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class _StopRequest:
    """Each of :data:`STOP_SIGNALS` sets a flag checked once per step; a second SIGINT raises
    KeyboardInterrupt (a way out when a step hangs)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def describe(self) -> str:
        """The received signal's name, for messages (under DDP another rank may have received it)."""
        return signal.Signals(self.signal).name if self.signal is not None else "a signal on another rank"

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _slot_attention_diagnostics(
    model: ObjectCentricModel, output: ModelOutput, config: ExperimentConfig, ctx: DistributedContext
) -> dict[str, float]:
    """Forward residual (mean/max over the batch and ranks), solver steps and the cell's Jacobian norm."""
    sa_output = output.slot_attention
    values: dict[str, float] = {}
    residual = sa_output.relative_residual.detach().float()  # (B,)
    stats = ctx.all_reduce_sum(torch.stack([residual.sum(), torch.tensor(float(residual.numel()))]).cpu())
    values["diag/residual_mean"] = float(stats[0] / stats[1])
    values["diag/residual_max"] = float(ctx.all_reduce_max(residual.max().reshape(1).cpu())[0])
    values.update(_solver_statistics(sa_output))
    if config.diagnostics.jacobian and ctx.is_main:
        from implicit_slots.diagnostics import slot_attention_jacobian_norm

        n = config.diagnostics.jacobian_max_samples
        subset = replace(
            sa_output,
            slots=sa_output.slots[:n].detach().float(),
            inputs=sa_output.inputs[:n].detach().float(),
        )
        generator = torch.Generator(ctx.device).manual_seed(0)
        with _isolated_rng(ctx.device), torch.autocast(ctx.device.type, enabled=False):
            norms = slot_attention_jacobian_norm(
                model.slot_attention, subset, config.diagnostics.jacobian_iterations, generator
            ).float()  # (n,)
        values["diag/jacobian_norm_mean"] = float(norms.mean())
        values["diag/jacobian_norm_max"] = float(norms.max())
    return values


def _solver_statistics(sa_output: Any) -> dict[str, float]:
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
def _validation_loss(
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
    with _isolated_rng(ctx.device):
        for batch in validation_batches(dataset, batch_size, v.num_batches, ctx.rank, ctx.world_size):
            batch = _to_device(batch, ctx.device)
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
    with _run_folder_lock(run_dir, ctx):
        run = _set_up(config, run_dir, resume, dataset_factory, command, ctx)
        with _StopRequest() as stop, contextlib.closing(run.logger):
            while run.counters.step < config.training.max_steps:
                step = _training_step(run, stop)  # schedules, batch, forward, loss, backward, clip, update
                _report(run, step)  # log, validate, images when due
                _stop_if_diverged(run)
                if step.stop or _due(run.counters.step, config.training.checkpoint_every):
                    _write_checkpoint(run)
                if step.stop:
                    run.interrupted = True
                    run.logger.message(
                        f"interrupted at step {run.counters.step} by {stop.describe()}: checkpoint "
                        f"written to {run.checkpoint_path}; continue with `implicit-slots train --resume "
                        f"{run_dir}`"
                    )
                    break
            if run.last_checkpoint_step != run.counters.step:
                _write_checkpoint(run)
        return _finish(run, stop)


# ---------------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Counters:
    """What advances from step to step besides the model and optimizer (saved in every checkpoint).

    Attributes:
        step: updates attempted so far (skipped ones included).
        consecutive_bad: NaN/Inf steps in a row up to now.
        total_bad: NaN/Inf steps over the whole run.
    """

    step: int = 0
    consecutive_bad: int = 0
    total_bad: int = 0


@dataclass
class _Run:
    """Everything one training run holds between steps.

    Attributes:
        config: the experiment config.
        ctx: this process's place in the (possibly distributed) job.
        run_dir: the run folder.
        checkpoint_path: ``run_dir / CHECKPOINT_NAME``.
        model: the model (unwrapped).
        ddp_model: the module called for the training forward (``model`` itself, or its DDP wrapper).
        optimizer: the optimizer, one group per model parameter group.
        groups: parameter group name -> trainable parameters.
        lr_schedule: learning rate of each group at each step.
        plateau: the plateau decay rule's state (None unless ``lr_decay.kind`` is ``plateau``).
        stream: the training batches, with a checkpointable position.
        val_set: the validation split (None when validation is off).
        logger: metrics / TensorBoard / console writer (disabled on ranks > 0).
        counters: step and skipped-step counters.
        ddp_outputs: under DDP, the model's own output of the last forward (see :func:`_wrap_for_ddp`).
        last_checkpoint_step: step of the last checkpoint written or resumed from (-1: none).
        last_loss: loss of the last logged step.
        last_validation_loss: the last validation loss.
        interrupted: the run stopped on a signal before ``max_steps``.
    """

    config: ExperimentConfig
    ctx: DistributedContext
    run_dir: Path
    checkpoint_path: Path
    model: ObjectCentricModel
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    groups: dict[str, list[nn.Parameter]]
    lr_schedule: LearningRateSchedule
    plateau: PlateauState | None
    stream: BatchStream
    val_set: Any
    logger: RunLogger
    counters: _Counters
    ddp_outputs: list[Any]
    last_checkpoint_step: int
    last_loss: float | None = None
    last_validation_loss: float | None = None
    interrupted: bool = False

    @property
    def params(self) -> list[nn.Parameter]:
        """Every trainable parameter, group by group."""
        return [p for group in self.groups.values() for p in group]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when ``training.precision`` is ``bf16``, else a no-op."""
        bf16 = self.config.training.precision == "bf16"
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=bf16)


@contextlib.contextmanager
def _run_folder_lock(run_dir: Path, ctx: DistributedContext) -> Iterator[None]:
    """Hold the run folder's lock (rank 0) while training; every rank fails if another process holds it."""
    lock = RunFolderLock(run_dir)
    busy: RunFolderBusyError | None = None
    if ctx.is_main:
        try:
            lock.acquire()
        except RunFolderBusyError as error:
            busy = error
    if ctx.distributed:  # the other ranks learn that rank 0 could not lock the folder
        refused = ctx.all_reduce_sum(torch.tensor([float(busy is not None)]))
        if busy is None and float(refused[0]) > 0:
            raise TrainingSetupError(f"rank 0 could not lock the run folder {str(run_dir)!r}")
    if busy is not None:
        raise TrainingSetupError(str(busy)) from busy
    try:
        yield
    finally:
        lock.release()


def _set_up(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    dataset_factory: DatasetFactory | None,
    command: str | None,
    ctx: DistributedContext,
) -> _Run:
    """Check the run folder, build model, optimizer, schedules and data, restore a checkpoint if resuming,
    write config.yaml and open the logger."""
    t = config.training
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)
    if t.batch_size % ctx.world_size != 0:
        raise TrainingSetupError(
            f"key 'training.batch_size': {t.batch_size} is not divisible by the {ctx.world_size} processes"
        )
    checkpoint_path = run_dir / CHECKPOINT_NAME
    checkpoint = _checkpoint_to_resume(run_dir, resume, ctx.device)

    seed_everything(t.seed)  # parameters start identical on every rank
    try:
        model = build_model(config).to(ctx.device)
    except ExperimentSetupError as error:
        raise TrainingSetupError(str(error)) from error
    optimizer, groups = _build_optimizer(model, t.optimizer)
    _check_hyperparameter_schedules(model, config)
    plateau = (
        PlateauState(t.lr_decay.patience, t.lr_decay.factor, t.lr_decay.min_delta)
        if t.lr_decay.kind == "plateau"
        else None
    )
    lr_schedule = LearningRateSchedule(
        t.optimizer,
        list(groups),
        decay_kind=t.lr_decay.kind,
        half_life=t.lr_decay.half_life,
        decay_start_step=t.lr_decay.start_step,
        plateau=plateau,
    )
    train_set, val_set, order = _build_data(config, dataset_factory, ctx)

    counters, sampler_state, reseeded_message = _Counters(), SamplerState(), None
    if checkpoint is not None:
        counters, sampler_state, reseeded_message = _restore(
            checkpoint, checkpoint_path, model, optimizer, plateau, order, config, ctx
        )
    else:
        seed_everything(t.seed + RANK_SEED_STRIDE * ctx.rank)
    stream = BatchStream(
        train_set,
        order,
        sampler_state,
        num_workers=config.data.num_workers,
        worker_seed=hash((t.seed, ctx.rank, sampler_state.epoch, sampler_state.position)) % 2**62,
    )
    ddp_outputs: list[Any] = [None]
    ddp_model = _wrap_for_ddp(model, config, ctx, ddp_outputs)

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(replace(config, provenance=_provenance(command)), run_dir / "config.yaml")
    logger = RunLogger(run_dir, counters.step, t.max_steps, resumed=resume, enabled=ctx.is_main)
    if reseeded_message is not None:
        logger.message(reseeded_message)
    model.train()
    return _Run(
        config=config,
        ctx=ctx,
        run_dir=run_dir,
        checkpoint_path=checkpoint_path,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        groups=groups,
        lr_schedule=lr_schedule,
        plateau=plateau,
        stream=stream,
        val_set=val_set,
        logger=logger,
        counters=counters,
        ddp_outputs=ddp_outputs,
        last_checkpoint_step=counters.step if resume else -1,
    )


def _checkpoint_to_resume(run_dir: Path, resume: bool, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to continue from (``resume``), or None for a fresh run into a folder without one."""
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if not resume:
        if checkpoint_path.exists():
            raise TrainingSetupError(
                f"run folder {str(run_dir)!r} already holds a run ({CHECKPOINT_NAME}); "
                "continue it with --resume or choose another --run-dir"
            )
        return None
    if not checkpoint_path.is_file():
        raise TrainingSetupError(f"cannot resume: no checkpoint at {str(checkpoint_path)!r}")
    try:
        return load_checkpoint(checkpoint_path, map_location=device)
    except ValueError as error:
        raise TrainingSetupError(f"cannot resume: {error}") from error


def _check_hyperparameter_schedules(model: ObjectCentricModel, config: ExperimentConfig) -> None:
    """Every scheduled hyperparameter is one the model has."""
    unknown = sorted(set(config.training.hyperparameter_schedules) - set(model.hyperparameter_names()))
    if unknown:
        raise TrainingSetupError(
            f"key 'training.hyperparameter_schedules.{unknown[0]}': model {config.model.name!r} has no "
            f"scheduled hyperparameter {unknown[0]!r}; valid: {list(model.hyperparameter_names())}"
        )


def _build_data(
    config: ExperimentConfig, dataset_factory: DatasetFactory | None, ctx: DistributedContext
) -> tuple[Any, Any, ShardedEpochOrder]:
    """(training split, validation split or None, this rank's sample order)."""
    t = config.training
    factory = dataset_factory if dataset_factory is not None else experiment_datasets.build_dataset_split
    try:
        train_set = factory(config.data, "train")
        val_set = factory(config.data, t.validation.split) if t.validation.every > 0 else None
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise TrainingSetupError(f"data (name {config.data.name!r}): {message}") from error
    try:
        order = ShardedEpochOrder(
            len(train_set),  # type: ignore[arg-type]
            t.batch_size // ctx.world_size,
            seed=t.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
    except ValueError as error:
        raise TrainingSetupError(str(error)) from error
    return train_set, val_set, order


def _restore(
    checkpoint: dict[str, Any],
    checkpoint_path: Path,
    model: ObjectCentricModel,
    optimizer: torch.optim.Optimizer,
    plateau: PlateauState | None,
    order: ShardedEpochOrder,
    config: ExperimentConfig,
    ctx: DistributedContext,
) -> tuple[_Counters, SamplerState, str | None]:
    """Load model, optimizer and plateau state and the RNG; (counters, sample position, warning or None)."""
    try:
        load_model_state(model, checkpoint["model"], checkpoint_path)
    except ValueError as error:
        raise TrainingSetupError(f"cannot resume: {error}") from error
    optimizer.load_state_dict(checkpoint["optimizer"])
    if plateau is not None and checkpoint.get("plateau") is not None:
        plateau.load_state_dict(checkpoint["plateau"])
    step = int(checkpoint["step"])
    # Stored globally (samples of the epoch consumed by all ranks), so a run resumed with another
    # number of processes continues the same global order.
    per_rank = checkpoint["data"]["position"] // ctx.world_size
    per_rank -= per_rank % order.batch_size
    sampler_state = SamplerState(checkpoint["data"]["epoch"], per_rank)
    if per_rank + order.batch_size > order.batches_per_epoch * order.batch_size:
        sampler_state = SamplerState(sampler_state.epoch + 1, 0)
    counters = _Counters(
        step, int(checkpoint["bad_steps"]["consecutive"]), int(checkpoint["bad_steps"]["total"])
    )
    if len(checkpoint["rng"]) == ctx.world_size:
        restore_rng_state(checkpoint["rng"][ctx.rank], ctx.device)
        return counters, sampler_state, None
    # Another number of processes: the sample order is kept, per-rank randomness cannot be.
    seed_everything(config.training.seed + RANK_SEED_STRIDE * ctx.rank + step)
    message = (
        f"resuming a {len(checkpoint['rng'])}-process run with {ctx.world_size} process(es): same "
        "sample order, fresh random streams (not bit-identical to the original run)"
    )
    return counters, sampler_state, message


def _wrap_for_ddp(
    model: ObjectCentricModel, config: ExperimentConfig, ctx: DistributedContext, outputs: list[Any]
) -> nn.Module:
    """``model`` itself, or under DDP its DistributedDataParallel wrapper.

    DDP rebuilds the model's output from its pytree; what the gradient estimators fill in during backward
    (the IFT's backward solver statistics) lands on the model's own output, kept in ``outputs[0]``.
    """
    if not ctx.distributed:
        return model

    def keep_output(module: nn.Module, inputs: Any, output: Any) -> None:
        register_output_pytrees(output)
        outputs[0] = output

    model.register_forward_hook(keep_output)
    return DistributedDataParallel(
        model,
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=config.training.ddp_find_unused_parameters,
    )


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


def _training_step(run: _Run, stop: _StopRequest) -> _Step:
    """Schedules, batch, forward, loss, backward; then skip the update (NaN/Inf) or clip and update."""
    t = run.config.training
    diagnostics_due = _due(run.counters.step + 1, run.config.diagnostics.every)
    set_residual_recording(run.model, diagnostics_due)  # the residual costs a cell call; read only then
    learning_rates, hyperparameters = _apply_schedules(run)
    batch = _to_device(run.stream.next(), run.ctx.device)
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


def _apply_schedules(run: _Run) -> tuple[dict[str, float], dict[str, float]]:
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
    run: _Run, loss: Tensor, grad_norm: Tensor, stop: _StopRequest
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


def _skip_update(run: _Run) -> None:
    """Drop this step's gradients and count the step as bad."""
    run.optimizer.zero_grad(set_to_none=True)
    run.counters.consecutive_bad += 1
    run.counters.total_bad += 1
    run.logger.message(
        f"step {run.counters.step + 1}: non-finite loss or gradient, update skipped "
        f"({run.counters.consecutive_bad} in a row, {run.counters.total_bad} in total)"
    )


def _diagnostics(run: _Run, output: ModelOutput, learning_rates: dict[str, float]) -> dict[str, float]:
    """Gradient norms per group (before clipping), slot-attention diagnostics and learning rates."""
    from implicit_slots.diagnostics import gradient_norms

    values = {f"grad_norm/{k}": v for k, v in gradient_norms(run.groups).items()}
    own_output = run.ddp_outputs[0] if run.ctx.distributed else output
    values.update(_slot_attention_diagnostics(run.model, own_output, run.config, run.ctx))
    values.update({f"lr/{name}": lr for name, lr in learning_rates.items()})
    return values


# ---------------------------------------------------------------------------------------------------
# Reporting, checkpoints, end
# ---------------------------------------------------------------------------------------------------


def _due(step: int, every: int) -> bool:
    """True when a periodic event with period ``every`` (0: never) falls on ``step``."""
    return every > 0 and step % every == 0


def _report(run: _Run, step: _Step) -> None:
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
        values = _validation_loss(run.model, run.val_set, run.config, ctx, run.autocast)
        record.update(values)
        run.last_validation_loss = values["val/loss"]
        if run.plateau is not None and run.plateau.update(run.last_validation_loss):
            run.logger.message(f"step {now}: validation plateau, learning-rate factor {run.plateau.decay:g}")
        record["lr_decay_factor"] = run.lr_schedule.decay_factor(now)
    if _due(now, diag.images_every) and ctx.is_main:
        with _isolated_rng(ctx.device), torch.no_grad():
            images = run.model.visualise(step.output, step.batch)
        run.logger.images(now, {k: v[: diag.max_images] for k, v in images.items()})
    run.logger.log(now, record)


def _training_scalars(run: _Run, step: _Step) -> dict[str, float]:
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


def _stop_if_diverged(run: _Run) -> None:
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


def _write_checkpoint(run: _Run) -> Path | None:
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


def _checkpoint_state(run: _Run, rng_states: list[object]) -> dict[str, Any]:
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


def _finish(run: _Run, stop: _StopRequest) -> TrainResult:
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
