"""One training run's state and its set-up: run folder lock, model, optimizer, schedules, data, DDP, and
the restored state when resuming (the first phase of :func:`implicit_slots.training.train`)."""

from __future__ import annotations

import contextlib
import datetime
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import implicit_slots
from implicit_slots.config import (
    ExperimentConfig,
    OptimizerConfig,
    ProvenanceConfig,
    save_config,
)
from implicit_slots.experiment import datasets as experiment_datasets
from implicit_slots.experiment.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    seed_everything,
)
from implicit_slots.experiment.datasets import DatasetFactory
from implicit_slots.experiment.models import ExperimentSetupError, build_model
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.training.data import (
    BatchStream,
    SamplerState,
    ShardedEpochOrder,
)
from implicit_slots.training.distributed import DistributedContext, register_output_pytrees
from implicit_slots.training.lock import LOCK_NAME, RunFolderBusyError, RunFolderLock
from implicit_slots.training.logger import MetricsFileError, RunLogger
from implicit_slots.training.schedules import LearningRateSchedule, PlateauState

__all__ = [
    "RANK_SEED_STRIDE",
    "Counters",
    "TrainingRun",
    "TrainingSetupError",
    "run_folder_lock",
    "set_up_run",
]

# Training randomness of rank r is seeded with seed + r * RANK_SEED_STRIDE, so ranks draw different
# per-sample slot initialisations and dropout masks while parameters start identical on every rank.
RANK_SEED_STRIDE = 1_000_003


class TrainingSetupError(ExperimentSetupError):
    """The config does not fit the model, the data or the run folder, or the folder is busy (names the key,
    path or process)."""


@dataclass
class Counters:
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
class TrainingRun:
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
    counters: Counters
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
def run_folder_lock(run_dir: Path, ctx: DistributedContext) -> Iterator[None]:
    """Hold the run folder's lock (rank 0) while training; every rank fails if another process holds it.

    A folder created only to hold the lock (a run whose set-up failed) is removed again on the way out.
    """
    lock = RunFolderLock(run_dir)
    created = not run_dir.exists()
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
        if (
            created
            and ctx.is_main
            and run_dir.is_dir()
            and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]
        ):
            lock.path.unlink()
            run_dir.rmdir()


def set_up_run(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    dataset_factory: DatasetFactory | None,
    command: str | None,
    ctx: DistributedContext,
) -> TrainingRun:
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

    counters, sampler_state, reseeded_message = Counters(), SamplerState(), None
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
    try:
        logger = RunLogger(run_dir, counters.step, t.max_steps, resumed=resume, enabled=ctx.is_main)
    except MetricsFileError as error:  # resuming rewrites metrics.jsonl; a damaged line stops it first
        raise TrainingSetupError(str(error)) from error
    if reseeded_message is not None:
        logger.message(reseeded_message)
    model.train()
    return TrainingRun(
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
) -> tuple[Counters, SamplerState, str | None]:
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
    counters = Counters(
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


def _build_optimizer(
    model: ObjectCentricModel, config: OptimizerConfig
) -> tuple[torch.optim.Optimizer, dict[str, list[nn.Parameter]]]:
    """(Adam / AdamW with one group per model parameter group, group name -> trainable parameters).

    Learning rates start at 0; the loop sets every group's rate at the start of each step.
    """
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
    """Package version, git commit (and whether the tree is dirty, when a git checkout), time, command."""
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
