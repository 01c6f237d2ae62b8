"""The training loop: one function, top to bottom (see docs/training.md).

``train(config, run_dir)`` builds the model, optimizer, schedules and data from an
:class:`~implicit_slots.config.ExperimentConfig`, then runs ``training.max_steps`` steps. Each step:

1. set every group's learning rate and the scheduled model hyperparameters for this step;
2. forward + loss (bf16 autocast when ``training.precision`` is ``bf16``), backward;
3. if the loss or the gradient is NaN/Inf (on any rank), skip the update (counted, logged; too many in a
   row stop the run); otherwise clip (``training.grad_clip``) and take the optimizer step;
4. log, run diagnostics / validation / images when due, write ``checkpoints/last.pt`` when due.

The same code runs single-process and under ``torchrun`` (DDP): ranks shard the data, rank 0 logs and
writes checkpoints. SIGINT/SIGTERM finish the current step, write a checkpoint and return.
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
from implicit_slots.models.base import ModelOutput, ObjectCentricModel
from implicit_slots.models.registry import get_model_spec
from implicit_slots.training import data as data_module
from implicit_slots.training.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint_atomic,
    seed_everything,
)
from implicit_slots.training.data import BatchStream, DatasetFactory, SamplerState, ShardedEpochOrder
from implicit_slots.training.distributed import DistributedContext, register_output_pytrees, setup_distributed
from implicit_slots.training.gradients import clip_gradients, total_gradient_norm
from implicit_slots.training.logger import RunLogger
from implicit_slots.training.schedules import LearningRateSchedule, PlateauState, hyperparameter_values

__all__ = [
    "CHECKPOINT_NAME",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingSetupError",
    "build_model",
    "train",
]

CHECKPOINT_NAME = "checkpoints/last.pt"
# Training randomness of rank r is seeded with seed + r * RANK_SEED_STRIDE, so ranks draw different
# per-sample slot initialisations and dropout masks while parameters start identical on every rank.
RANK_SEED_STRIDE = 1_000_003


class TrainingSetupError(ValueError):
    """The config does not fit the model or the run folder (names the key or path)."""


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps had a NaN/Inf loss or gradient; the last good state was checkpointed."""


DIVERGED_EXIT_CODE = 3
"""``implicit-slots train``'s exit code after a :class:`TrainingDivergedError` (1 is a crash, 2 a bad
command line or config)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: steps completed (the step of the last checkpoint).
        status: ``"completed"`` or ``"interrupted"`` (SIGINT/SIGTERM).
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


def build_model(config: ExperimentConfig) -> ObjectCentricModel:
    """The model of ``config`` (registry lookup + the model's builder).

    Raises:
        TrainingSetupError: the builder rejected a value of the ``model:`` section (its message names it).
    """
    try:
        return get_model_spec(config.model.name).build(config.model.config)
    except ValueError as error:
        raise TrainingSetupError(f"model {config.model.name!r}: {error}") from error


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
    """SIGINT/SIGTERM set a flag checked once per step; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

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
        for batch in data_module.validation_batches(
            dataset, batch_size, v.num_batches, ctx.rank, ctx.world_size
        ):
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
            :func:`implicit_slots.training.data.build_dataset_split`.
        command: the command line, recorded in config.yaml's provenance.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingSetupError: the config does not fit the model, or the run folder state does not fit
            ``resume`` (a fresh run into a folder that has a checkpoint, or a resume without one).
        TrainingDivergedError: ``training.max_consecutive_bad_steps`` NaN/Inf steps in a row.
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
    t, diag = config.training, config.diagnostics
    device = ctx.device
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)
    if t.batch_size % ctx.world_size != 0:
        raise TrainingSetupError(
            f"key 'training.batch_size': {t.batch_size} is not divisible by the {ctx.world_size} processes"
        )
    checkpoint_path = run_dir / CHECKPOINT_NAME
    checkpoint: dict[str, Any] | None = None
    if resume:
        if not checkpoint_path.is_file():
            raise TrainingSetupError(f"cannot resume: no checkpoint at {str(checkpoint_path)!r}")
        try:
            checkpoint = load_checkpoint(checkpoint_path, map_location=device)
        except ValueError as error:
            raise TrainingSetupError(f"cannot resume: {error}") from error
    elif checkpoint_path.exists():
        raise TrainingSetupError(
            f"run folder {str(run_dir)!r} already holds a run ({CHECKPOINT_NAME}); "
            "continue it with --resume or choose another --run-dir"
        )

    # ---- model, optimizer, schedules (parameters start identical on every rank) ----
    seed_everything(t.seed)
    model = build_model(config).to(device)
    optimizer, groups = _build_optimizer(model, t.optimizer)
    unknown = sorted(set(t.hyperparameter_schedules) - set(model.hyperparameter_names()))
    if unknown:
        raise TrainingSetupError(
            f"key 'training.hyperparameter_schedules.{unknown[0]}': model {config.model.name!r} has no "
            f"scheduled hyperparameter {unknown[0]!r}; valid: {list(model.hyperparameter_names())}"
        )
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
    params = [p for group in groups.values() for p in group]

    # ---- data ----
    factory = dataset_factory if dataset_factory is not None else data_module.build_dataset_split
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

    # ---- state: fresh or restored ----
    step, sampler_state, consecutive_bad, total_bad = 0, SamplerState(), 0, 0
    reseeded_message: str | None = None
    if checkpoint is not None:
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
        consecutive_bad = int(checkpoint["bad_steps"]["consecutive"])
        total_bad = int(checkpoint["bad_steps"]["total"])
        if len(checkpoint["rng"]) == ctx.world_size:
            restore_rng_state(checkpoint["rng"][ctx.rank], device)
        else:  # another number of processes: the sample order is kept, per-rank randomness cannot be
            seed_everything(t.seed + RANK_SEED_STRIDE * ctx.rank + step)
            reseeded_message = (
                f"resuming a {len(checkpoint['rng'])}-process run with {ctx.world_size} process(es): same "
                "sample order, fresh random streams (not bit-identical to the original run)"
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
    ddp_model: nn.Module = model
    # DDP rebuilds the model's output from its pytree; what the gradient estimators fill in during
    # backward (the IFT's backward solver statistics) lands on the model's own output, kept here.
    unwrapped_output: list[Any] = [None]
    if ctx.distributed:

        def keep_output(module: nn.Module, inputs: Any, output: Any) -> None:
            register_output_pytrees(output)
            unwrapped_output[0] = output

        model.register_forward_hook(keep_output)
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=t.ddp_find_unused_parameters,
        )

    # ---- run folder ----
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(replace(config, provenance=_provenance(command)), run_dir / "config.yaml")
    logger = RunLogger(run_dir, step, t.max_steps, resumed=resume, enabled=ctx.is_main)
    if reseeded_message is not None:
        logger.message(reseeded_message)

    bf16 = t.precision == "bf16"

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def write_checkpoint() -> Path | None:
        # Every rank contributes its RNG state (a collective), rank 0 writes.
        rng_states = ctx.all_gather_object(capture_rng_state(device))
        if not ctx.is_main:
            return None
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "step": step,
            "world_size": ctx.world_size,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "plateau": plateau.state_dict() if plateau is not None else None,
            "hyperparameters": hyperparameter_values(t.hyperparameter_schedules, step),
            "data": {"epoch": stream.state.epoch, "position": stream.state.position * ctx.world_size},
            "rng": rng_states,
            "bad_steps": {"consecutive": consecutive_bad, "total": total_bad},
            "config": config_to_dict(config),
        }
        return save_checkpoint_atomic(state, checkpoint_path)

    last_loss: float | None = None
    last_val: float | None = None
    last_checkpoint_step = step if resume else -1
    interrupted = False
    model.train()
    with _StopRequest() as stop:
        try:
            while step < t.max_steps:
                # 1. schedules of this step
                lrs = lr_schedule.learning_rates(step)
                for group in optimizer.param_groups:
                    group["lr"] = lrs[group["name"]]
                hyperparameters = hyperparameter_values(t.hyperparameter_schedules, step)
                if hyperparameters:
                    model.set_hyperparameters(hyperparameters)

                # 2. forward, loss, backward
                batch = _to_device(stream.next(), device)
                with autocast():
                    output = ddp_model(batch)
                    losses = model.compute_loss(output, batch)
                losses.loss.backward()

                # 3. skip non-finite steps (agreed over ranks), else clip and update
                grad_norm = total_gradient_norm(params).cpu()
                record: dict[str, float] = {}
                diagnostics_due = diag.every > 0 and (step + 1) % diag.every == 0
                flags = torch.stack(
                    [
                        (~torch.isfinite(losses.loss.detach().float())).float().cpu(),
                        (~torch.isfinite(grad_norm)).float().cpu(),
                        torch.tensor(float(stop.signal is not None)),
                    ]
                )
                flags = ctx.all_reduce_sum(flags)
                bad_step, stop_now = bool(flags[0] + flags[1] > 0), bool(flags[2] > 0)
                if diagnostics_due and not bad_step:
                    from implicit_slots.diagnostics import gradient_norms

                    record.update({f"grad_norm/{k}": v for k, v in gradient_norms(groups).items()})
                    own_output = unwrapped_output[0] if ctx.distributed else output
                    record.update(_slot_attention_diagnostics(model, own_output, config, ctx))
                    record.update({f"lr/{name}": lr for name, lr in lrs.items()})
                if bad_step:
                    optimizer.zero_grad(set_to_none=True)
                    consecutive_bad += 1
                    total_bad += 1
                    logger.message(
                        f"step {step + 1}: non-finite loss or gradient, update skipped "
                        f"({consecutive_bad} in a row, {total_bad} in total)"
                    )
                else:
                    consecutive_bad = 0
                    clip_gradients(params, t.grad_clip.norm, t.grad_clip.max_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1

                # 4. logging, validation, images, checkpoints
                if step % t.log_every == 0 or bad_step:
                    scalars = torch.stack(
                        [losses.loss.detach().float(), *(v.detach().float() for v in losses.terms.values())]
                    ).cpu()
                    scalars = ctx.all_reduce_sum(scalars) / ctx.world_size
                    last_loss = float(scalars[0])
                    record["loss"] = last_loss
                    record.update({key: float(scalars[i + 1]) for i, key in enumerate(losses.terms)})
                    record["grad_norm"] = float(grad_norm)
                    record.update({f"lr/{name}": lr for name, lr in lrs.items()})
                    record.update({f"hyper/{name}": value for name, value in hyperparameters.items()})
                    record["skipped_steps"] = float(total_bad)
                    logger.progress(step, last_loss)
                else:
                    logger.progress(step, None)
                if t.validation.every > 0 and step % t.validation.every == 0:
                    values = _validation_loss(model, val_set, config, ctx, autocast)
                    record.update(values)
                    last_val = values["val/loss"]
                    if plateau is not None and plateau.update(last_val):
                        logger.message(
                            f"step {step}: validation plateau, learning-rate factor {plateau.decay:g}"
                        )
                    record["lr_decay_factor"] = lr_schedule.decay_factor(step)
                if diag.images_every > 0 and step % diag.images_every == 0 and ctx.is_main:
                    with _isolated_rng(device), torch.no_grad():
                        images = model.visualise(output, batch)
                    logger.images(step, {k: v[: diag.max_images] for k, v in images.items()})
                logger.log(step, record)
                del output, losses, batch

                if consecutive_bad >= t.max_consecutive_bad_steps:
                    write_checkpoint()
                    last_checkpoint_step = step
                    raise TrainingDivergedError(
                        f"stopping at step {step}: {consecutive_bad} consecutive steps had a NaN/Inf loss or "
                        "gradient (training.max_consecutive_bad_steps="
                        f"{t.max_consecutive_bad_steps}); the last finite state is in {checkpoint_path}. "
                        "Lower the learning rate or enable training.grad_clip, then resume."
                    )
                if stop_now or (t.checkpoint_every > 0 and step % t.checkpoint_every == 0):
                    write_checkpoint()
                    last_checkpoint_step = step
                if stop_now:
                    interrupted = True
                    logger.message(f"interrupted at step {step}: checkpoint written to {checkpoint_path}")
                    break
            if last_checkpoint_step != step:
                write_checkpoint()
        finally:
            logger.close()
    model.eval()
    return TrainResult(
        run_dir=run_dir,
        step=step,
        status="interrupted" if interrupted else "completed",
        signal=stop.signal,
        last_loss=last_loss,
        last_validation_loss=last_val,
        skipped_steps=total_bad,
        checkpoint=checkpoint_path if ctx.is_main else None,
        model=model,
    )
