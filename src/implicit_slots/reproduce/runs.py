"""Plan and execute the runs of an experiment: one run folder per (config, seed), J subprocesses at a time.

Each run is ``python -m implicit_slots.cli train CONFIG --run-dir DIR training.seed=S ...`` followed by
``python -m implicit_slots.cli evaluate DIR ...``, each a subprocess with ``OMP_NUM_THREADS=1`` and
``training.num_threads=1``. A run is *complete* when ``checkpoints/last.pt`` is at ``training.max_steps``
and ``eval/metrics.json`` evaluates that checkpoint; complete runs are skipped, interrupted ones resumed
(``train --resume``), trained-but-unevaluated ones only evaluated.

Configs of different table cells / figure curves that resolve to the same experiment (e.g. Fig. 5's
"all tricks" curve and Table 3's CLEVR-Mirror cell) share one run folder, named after the alphabetically
first such config: the run is trained once and read by every figure that shows it.

Two-stage SLATE (an experiment's ``dvae_stage`` at the scale, or ``--dvae two-stage``): the plan first holds
one *dVAE stage* per (dataset, resolution, seed), a ``dvae`` model trained with SLATE's dVAE recipe
(:func:`dvae_stage_config`), in ``runs_dir/two_stage/dvae_<dataset>_<size>px_<hash>/seed<s>``; every SLATE
arm of that seed runs in ``runs_dir/two_stage/<config>/seed<s>`` with ``model.dvae_init`` = the stage's
folder (and ``model.freeze_dvae``). Stages are skipped, resumed and evaluated like any run, and run before
the arms.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from implicit_slots.config import (
    DiagnosticsConfig,
    ExperimentConfig,
    GradClipConfig,
    LRDecayConfig,
    ModelSection,
    OptimizerConfig,
    ParamGroupConfig,
    TrainingConfig,
    ValidationConfig,
    config_differences,
    config_to_dict,
    describe_keys,
    load_config,
    save_config,
)
from implicit_slots.reproduce.experiments import (
    CONFIG_ROOT,
    SCALES,
    DvaeStage,
    EvaluationPlan,
    Experiment,
    config_names,
)
from implicit_slots.training import DIVERGED_EXIT_CODE, INTERRUPTED_EXIT_CODE
from implicit_slots.training.stop import StopRequest

__all__ = [
    "DVAE_MODES",
    "RUN_STATUS_FILE",
    "TWO_STAGE_DIR",
    "ReproduceError",
    "RunSpec",
    "RunState",
    "build_plan",
    "dvae_stage_config",
    "execute_plan",
    "inspect_run",
]

RUN_STATUS_FILE = "reproduce_status.json"
TWO_STAGE_DIR = "two_stage"  # runs_dir/two_stage/ holds the dVAE stages and the SLATE arms built on them
DVAE_MODES = ("auto", "joint", "two-stage")  # reproduce --dvae: the experiment's choice, or forced
STAGE_CONFIG_FILE = "stage.yaml"  # the dVAE stage's config (seed 0; the seed is an override), in its folder
DVAE_STAGE_GRAD_CLIP = 1.0  # official SLATE: clip_grad_norm_(params, 1.0, 'inf') over all parameters


class ReproduceError(ValueError):
    """The plan cannot be made or run (bad config, a run folder holding a different experiment, ...)."""


@dataclass
class RunSpec:
    """One (config, seed) run of the plan.

    Attributes:
        config_name: the canonical config (its stem) whose folder holds the run.
        aliases: every config name of this scale resolving to the same experiment (canonical included).
        config_path: the canonical YAML file.
        seed: ``training.seed``.
        overrides: dotted overrides applied after the file (seed, threads, user overrides).
        run_dir: the run folder.
        config: the resolved config.
        evaluation: how to evaluate the run.
        kind: ``"run"`` (a table cell / figure curve) or ``"dvae-stage"`` (a shared dVAE of two-stage SLATE).
        dvae_stage: for a SLATE arm of two-stage SLATE, the folder of the dVAE stage it starts from.
    """

    config_name: str
    aliases: tuple[str, ...]
    config_path: Path
    seed: int
    overrides: tuple[str, ...]
    run_dir: Path
    config: ExperimentConfig
    evaluation: EvaluationPlan
    kind: str = "run"
    dvae_stage: Path | None = None

    @property
    def label(self) -> str:
        """``<config>/seed<s>`` (for logs)."""
        return f"{self.config_name}/seed{self.seed}"


@dataclass
class RunState:
    """What is on disk for a run.

    Attributes:
        checkpoint_step: step of ``checkpoints/last.pt`` (None: no checkpoint).
        evaluated_step: ``checkpoint_step`` recorded in ``eval/metrics.json`` (None: not evaluated).
        diverged: the training subprocess stopped on NaN/Inf steps (recorded in reproduce_status.json).
        max_steps: the config's ``training.max_steps``.
    """

    checkpoint_step: int | None
    evaluated_step: int | None
    diverged: bool
    max_steps: int

    @property
    def trained(self) -> bool:
        """Training is over: at ``max_steps``, or stopped for good by divergence."""
        if self.checkpoint_step is None:
            return False
        return self.checkpoint_step >= self.max_steps or self.diverged

    @property
    def complete(self) -> bool:
        """Trained and the final checkpoint evaluated."""
        return self.trained and self.evaluated_step == self.checkpoint_step


def _run_overrides(seed: int, user_overrides: Sequence[str]) -> tuple[str, ...]:
    return (f"training.seed={seed}", "training.num_threads=1", *user_overrides)


def dvae_stage_config(arm: ExperimentConfig, stage: DvaeStage) -> ExperimentConfig:
    """The config of the dVAE stage of a SLATE arm: SLATE's dVAE, data and dVAE recipe, nothing else.

    Only what every arm of a comparison shares enters it (the data, the dVAE's sizes, the batch size, the
    ``dvae`` group's learning rate, the Gumbel-temperature schedule, optimizer type, device, precision,
    seed), so all arms on one (dataset, resolution) get the same stage. What a claim varies (slot attention,
    clipping, warm-up, decay of the ``main`` group) does not enter. Fixed, as official SLATE trains its dVAE:
    no warm-up (unless the ``dvae`` group states one), no learning-rate decay, gradients clipped to a largest
    entry of 1.0. No diagnostics (a dVAE has no slot attention) and no validation.

    Args:
        arm: a resolved ``slate`` config.
        stage: the experiment's dVAE stage (steps).

    Raises:
        ReproduceError: ``arm`` is not a SLATE config.
    """
    if arm.model.name != "slate":
        raise ReproduceError(f"a dVAE stage is derived from a 'slate' config, got model {arm.model.name!r}")
    from implicit_slots.models.slate import DvaeConfig

    slate = arm.model.config
    t = arm.training
    group = t.optimizer.groups.get("dvae") or ParamGroupConfig()
    optimizer = OptimizerConfig(
        name=t.optimizer.name,
        lr=group.lr if group.lr is not None else t.optimizer.lr,
        betas=list(t.optimizer.betas),
        eps=t.optimizer.eps,
        weight_decay=group.weight_decay if group.weight_decay is not None else t.optimizer.weight_decay,
        warmup_steps=group.warmup_steps or 0,
    )
    schedules = {
        name: copy.deepcopy(schedule)
        for name, schedule in t.hyperparameter_schedules.items()
        if name == "gumbel_temperature"
    }
    training = TrainingConfig(
        max_steps=stage.max_steps if stage.max_steps is not None else t.max_steps,
        batch_size=t.batch_size,
        seed=t.seed,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        device=t.device,
        precision=t.precision,
        num_threads=t.num_threads,
        optimizer=optimizer,
        grad_clip=GradClipConfig(norm="inf", max_norm=DVAE_STAGE_GRAD_CLIP),
        lr_decay=LRDecayConfig(),
        hyperparameter_schedules=schedules,
        max_consecutive_bad_steps=t.max_consecutive_bad_steps,
        validation=ValidationConfig(),
        ddp_find_unused_parameters=False,
    )
    model = DvaeConfig(
        image_size=slate.image_size,
        vocab_size=slate.vocab_size,
        dvae_hidden_channels=slate.dvae_hidden_channels,
        gumbel_temperature=slate.gumbel_temperature,
    )
    return ExperimentConfig(
        model=ModelSection(name="dvae", config=model),
        data=copy.deepcopy(arm.data),
        training=training,
        diagnostics=DiagnosticsConfig(),
    )


def _stage_name(config: ExperimentConfig) -> str:
    """``dvae_<dataset>_<size>px_<hash>``: readable, and distinct for distinct stage recipes (seed aside)."""
    values = config_to_dict(config)
    values.pop("provenance", None)
    values["training"].pop("seed", None)
    values["training"].pop("num_threads", None)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"dvae_{config.data.name}_{config.data.image_size}px_{digest}"


def uses_two_stage(experiment: Experiment, scale: str, dvae: str = "auto") -> DvaeStage | None:
    """The dVAE stage of ``experiment``'s SLATE runs at ``scale`` (None: joint training).

    Args:
        experiment: the experiment.
        scale: ``cpu`` or ``paper``.
        dvae: ``auto`` (the experiment's ``dvae_stage`` at the scale), ``joint`` or ``two-stage`` (the
            experiment's stage settings at the scale, else :class:`DvaeStage` defaults).
    """
    if dvae not in DVAE_MODES:
        raise ReproduceError(f"unknown --dvae mode {dvae!r}; valid: {list(DVAE_MODES)}")
    if dvae == "joint":
        return None
    stage = experiment.dvae_stage.get(scale)
    if dvae == "two-stage" and stage is None:
        return DvaeStage()
    return stage


def build_plan(
    experiments: Sequence[Experiment],
    scale: str,
    seeds: int,
    runs_dir: Path,
    *,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    dvae: str = "auto",
) -> list[RunSpec]:
    """The runs of ``experiments`` at ``scale`` for seeds ``0 .. seeds-1``, deduplicated.

    Under two-stage SLATE (see the module docstring) a dVAE stage precedes, once per (stage recipe, seed),
    the first SLATE arm that starts from it.

    Args:
        experiments: the experiments to run (in order; their runs keep that order).
        scale: ``cpu`` or ``paper``.
        seeds: number of seeds (``training.seed = 0 .. seeds-1``).
        runs_dir: where run folders go (``runs_dir/<config>/seed<s>``; two-stage SLATE's stages and arms in
            ``runs_dir/two_stage/``).
        overrides: dotted overrides applied to every run (e.g. ``data.root=...``).
        only: glob patterns on config names; when given, only matching curves run.
        dvae: ``auto`` (each experiment's choice at the scale), or ``joint`` / ``two-stage`` for every
            SLATE run.

    Raises:
        ReproduceError: an invalid scale / seed count, or a config that does not load.
    """
    import fnmatch

    from implicit_slots.config import ConfigError

    if scale not in SCALES:
        raise ReproduceError(f"unknown scale {scale!r}; valid scales: {list(SCALES)}")
    if seeds < 1:
        raise ReproduceError(f"--seeds must be >= 1, got {seeds}")
    stages = {experiment.name: uses_two_stage(experiment, scale, dvae) for experiment in experiments}
    wanted = [
        (experiment, curve)
        for experiment in experiments
        for curve in experiment.curves
        if not only or any(fnmatch.fnmatch(curve.config, pattern) for pattern in only)
    ]
    if not wanted:
        raise ReproduceError(f"--only {list(only)} matches no config of {[e.name for e in experiments]}")
    # Shared runs are named after the Table 3 cell when there is one, else the alphabetically first config.
    # Files whose resolved configs (``base:`` chains merged) are equal are the same experiment; the same
    # overrides apply to all, so they stay equal after them.
    all_names = sorted(config_names(scale), key=lambda name: (not name.startswith("table"), name))
    groups: dict[str, list[str]] = {}
    for name in all_names:
        try:
            values = config_to_dict(load_config(CONFIG_ROOT / scale / f"{name}.yaml"))
        except ConfigError as error:
            raise ReproduceError(str(error)) from error
        values.pop("provenance", None)
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), []).append(name)
    canonical = {name: names[0] for names in groups.values() for name in names}
    aliases = {names[0]: tuple(names) for names in groups.values()}
    resolved: dict[tuple[str, tuple[str, ...]], ExperimentConfig] = {}

    def resolve(name: str, run_overrides: tuple[str, ...]) -> ExperimentConfig:
        if (name, run_overrides) not in resolved:
            try:
                resolved[name, run_overrides] = load_config(
                    CONFIG_ROOT / scale / f"{name}.yaml", run_overrides
                )
            except ConfigError as error:
                raise ReproduceError(str(error)) from error
        return resolved[name, run_overrides]

    plan: list[RunSpec] = []
    seen: set[tuple[str, int, bool]] = set()
    for experiment, curve in wanted:
        evaluation = experiment.evaluation.get(scale, EvaluationPlan())
        stage = stages[experiment.name]
        for seed in range(seeds):
            if curve.config not in canonical:
                raise ReproduceError(f"config {experiment.config_path(curve, scale)} does not exist")
            name = canonical[curve.config]
            run_overrides = _run_overrides(seed, overrides)
            config = resolve(name, run_overrides)
            two_stage = stage is not None and config.model.name == "slate"
            if (name, seed, two_stage) in seen:
                continue
            seen.add((name, seed, two_stage))
            arm_overrides, run_dir, stage_dir = run_overrides, runs_dir / name / f"seed{seed}", None
            if stage is not None and two_stage:
                stage_config = dvae_stage_config(config, stage)
                stage_name = _stage_name(stage_config)
                stage_dir = runs_dir / TWO_STAGE_DIR / stage_name / f"seed{seed}"
                if not any(spec.run_dir == stage_dir for spec in plan):
                    plan.append(
                        RunSpec(
                            config_name=stage_name,
                            aliases=(stage_name,),
                            config_path=stage_dir.parent / STAGE_CONFIG_FILE,
                            seed=seed,
                            overrides=_run_overrides(seed, ()),
                            run_dir=stage_dir,
                            config=stage_config,
                            evaluation=evaluation,
                            kind="dvae-stage",
                        )
                    )
                arm_overrides = (
                    *run_overrides,
                    f"model.dvae_init={stage_dir}",
                    f"model.freeze_dvae={str(stage.freeze).lower()}",
                )
                run_dir = runs_dir / TWO_STAGE_DIR / name / f"seed{seed}"
                config = resolve(name, arm_overrides)
            plan.append(
                RunSpec(
                    config_name=name,
                    aliases=aliases[name],
                    config_path=CONFIG_ROOT / scale / f"{name}.yaml",
                    seed=seed,
                    overrides=arm_overrides,
                    run_dir=run_dir,
                    config=config,
                    evaluation=evaluation,
                    dvae_stage=stage_dir,
                )
            )
    return plan


def run_folder(runs_dir: Path, config_name: str, seed: int, aliases: dict[str, str] | None = None) -> Path:
    """The folder of ``config_name``'s run with ``seed`` (following the shared-run aliases when given)."""
    name = aliases.get(config_name, config_name) if aliases else config_name
    return runs_dir / name / f"seed{seed}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def inspect_run(run_dir: Path, max_steps: int) -> RunState:
    """Read the state of a run folder (checkpoint step, evaluated step, divergence).

    Raises:
        ReproduceError: the folder has a checkpoint that cannot be read. It is not taken for "no
            checkpoint", which would start the run afresh and delete the folder.
    """
    from implicit_slots.training.checkpoint import load_checkpoint
    from implicit_slots.training.loop import CHECKPOINT_NAME

    checkpoint_step: int | None = None
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.exists():
        try:
            checkpoint_step = int(load_checkpoint(checkpoint, map_location="cpu")["step"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise ReproduceError(
                f"{error}; the run {str(run_dir)!r} cannot be resumed from it: restore the file, or delete "
                "the folder to train the run again"
            ) from error
    evaluation = _read_json(run_dir / "eval" / "metrics.json")
    evaluated = evaluation.get("checkpoint_step") if evaluation else None
    status = _read_json(run_dir / RUN_STATUS_FILE) or {}
    diverged = status.get("train") == "diverged" and status.get("checkpoint_step") == checkpoint_step
    return RunState(
        checkpoint_step=checkpoint_step,
        evaluated_step=int(evaluated) if evaluated is not None else None,
        diverged=bool(diverged),
        max_steps=max_steps,
    )


def _check_same_experiment(spec: RunSpec) -> None:
    """A run folder from an earlier invocation must hold the same experiment (ignoring max_steps)."""
    saved = spec.run_dir / "config.yaml"
    if not saved.is_file():
        return
    try:
        existing = load_config(saved)
    except ValueError as error:
        raise ReproduceError(f"{saved}: {error}") from error
    differences = config_differences(existing, spec.config)
    if differences:
        raise ReproduceError(
            f"run folder {spec.run_dir} holds a different experiment than {spec.config_path} with "
            f"{list(spec.overrides)} (it differs in {describe_keys(differences)}); move it away or choose "
            "another --runs-dir"
        )


@dataclass
class JobResult:
    """What happened to one run in :func:`execute_plan`.

    Attributes:
        spec: the run.
        trained: training ran in this invocation.
        evaluated: evaluation ran in this invocation.
        status: ``complete``, ``diverged``, ``interrupted`` (resumable), ``train-failed``, ``eval-failed``
            or ``stage-failed`` (the dVAE stage the run starts from failed; the run did not start).
        seconds: wall time spent on it in this invocation.
        message: the last lines of a failing subprocess's output.
    """

    spec: RunSpec
    trained: bool = False
    evaluated: bool = False
    status: str = "complete"
    seconds: float = 0.0
    message: str = ""


@dataclass
class ExecutionOptions:
    """How :func:`execute_plan` runs the subprocesses.

    Attributes:
        jobs: runs at a time.
        python: the Python interpreter.
        fid_weights: passed to ``evaluate --fid-weights``.
        device: passed to ``evaluate --device``.
        logs_dir: where each subprocess's output goes.
        dry_run: print the commands only.
        retry_diverged: train diverged runs again (resuming from their last finite checkpoint).
    """

    jobs: int = 1
    python: str = sys.executable
    fid_weights: Path | None = None
    device: str = "auto"
    logs_dir: Path | None = None
    dry_run: bool = False
    retry_diverged: bool = False
    echo: Callable[[str], None] = field(default=print)


def train_command(spec: RunSpec, state: RunState, python: str) -> list[str]:
    """The ``train`` subprocess command of a run (``--resume`` when a checkpoint exists)."""
    base = [python, "-m", "implicit_slots.cli", "train"]
    if state.checkpoint_step is not None:
        max_steps = f"training.max_steps={spec.config.training.max_steps}"
        return [*base, "--resume", str(spec.run_dir), max_steps]
    return [*base, str(spec.config_path), "--run-dir", str(spec.run_dir), *spec.overrides]


def evaluate_command(spec: RunSpec, options: ExecutionOptions) -> list[str]:
    """The ``evaluate`` subprocess command of a run."""
    command = [options.python, "-m", "implicit_slots.cli", "evaluate", str(spec.run_dir)]
    command += ["--split", spec.evaluation.split, "--device", options.device]
    if spec.evaluation.max_images is not None:
        command += ["--max-images", str(spec.evaluation.max_images)]
    if options.fid_weights is not None:
        command += ["--fid-weights", str(options.fid_weights)]
    return command


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    source = str(Path(__file__).resolve().parents[2])  # src/, so subprocesses import this tree
    env["PYTHONPATH"] = source + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class _StopForwarder(StopRequest):
    """A stop signal (SIGINT, SIGTERM, SIGUSR1) received by ``reproduce`` itself: no new subprocess starts
    and each running one gets SIGTERM, on which ``train`` finishes its step, checkpoints and exits with
    INTERRUPTED_EXIT_CODE. Without it a ``kill`` of ``reproduce`` left its subprocesses training unwatched,
    and Ctrl-C let the queued runs start one after another."""

    def __init__(self) -> None:
        super().__init__()
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.RLock()  # re-entrant: the handler runs on the main thread

    def __enter__(self) -> _StopForwarder:
        super().__enter__()
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        super()._handle(signum, frame)
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    def run(self, command: list[str], **kwargs: Any) -> int | None:
        """Run ``command`` to its end (``subprocess.Popen`` arguments); None when a stop came first."""
        with self._lock:
            if self.signal is not None:
                return None
            child = subprocess.Popen(command, **kwargs)
            self._children.add(child)
        try:
            return child.wait()
        finally:
            with self._lock:
                self._children.discard(child)


NOT_STARTED = "not started: reproduce received a stop signal"


def _run_logged(command: list[str], log_path: Path | None, stop: _StopForwarder) -> tuple[int, str]:
    """Run a subprocess, appending its output to ``log_path``; (return code, last lines of output).

    A stop signal before the start returns INTERRUPTED_EXIT_CODE without running anything.
    """
    env = _subprocess_env()
    if log_path is None:
        with tempfile.TemporaryFile() as output:
            code = stop.run(command, env=env, stdout=output, stderr=subprocess.STDOUT)
            output.seek(0)
            text = output.read().decode(errors="replace")
        if code is None:
            return INTERRUPTED_EXIT_CODE, NOT_STARTED
        return code, "\n".join(text.strip().splitlines()[-5:])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        code = stop.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code is None:
        return INTERRUPTED_EXIT_CODE, NOT_STARTED
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return code, "\n".join(lines[-5:])


def _write_status(spec: RunSpec, values: dict[str, Any]) -> None:
    path = spec.run_dir / RUN_STATUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader sees the old record or the new one


def _remove_unless_training(run_dir: Path) -> str | None:
    """Delete ``run_dir`` while holding its training lock; the lock holder's description (and nothing
    deleted) when a live process is training it."""
    from implicit_slots.training.lock import RunFolderBusyError, RunFolderLock

    folder_lock = RunFolderLock(run_dir)
    try:
        folder_lock.acquire()
    except RunFolderBusyError as error:
        return str(error)
    try:
        shutil.rmtree(run_dir)
    finally:
        folder_lock.release()
    return None


def _run_one(
    spec: RunSpec, options: ExecutionOptions, lock: threading.Lock, stop: _StopForwarder
) -> JobResult:
    started = time.perf_counter()
    result = JobResult(spec)
    max_steps = spec.config.training.max_steps
    state = inspect_run(spec.run_dir, max_steps)

    def say(text: str) -> None:
        with lock:
            options.echo(f"[reproduce {time.strftime('%H:%M:%S')}] {spec.label}: {text}")

    if state.complete and not (state.diverged and options.retry_diverged):
        say("complete, skipped")
        result.status = "diverged" if state.diverged else "complete"
        return result
    if stop.signal is not None:
        result.status, result.message = "interrupted", NOT_STARTED
        return result
    log_path = None
    if options.logs_dir is not None:
        log_path = options.logs_dir / f"{spec.config_name}_seed{spec.seed}.log"
    if not state.trained or (state.diverged and options.retry_diverged):
        if state.checkpoint_step is None and spec.run_dir.exists() and not options.dry_run:
            # No checkpoint: nothing to resume (killed before the first one); start afresh, unless a live
            # process (another `reproduce`, a hand-started `train`) is training the folder and has not
            # written its first checkpoint yet.
            busy = _remove_unless_training(spec.run_dir)
            if busy is not None:
                result.status, result.message = "train-failed", busy
                result.seconds = time.perf_counter() - started
                say(f"not started: {busy}")
                return result
        command = train_command(spec, state, options.python)
        what = (
            f"resuming from step {state.checkpoint_step}" if state.checkpoint_step is not None else "training"
        )
        say(f"{what} ({max_steps} steps)")
        if options.dry_run:
            say("$ " + " ".join(command))
        else:
            code, tail = _run_logged(command, log_path, stop)
            result.trained = True
            state = inspect_run(spec.run_dir, max_steps)
            diverged = code == DIVERGED_EXIT_CODE  # `implicit-slots train` stopped on NaN/Inf steps
            if diverged and state.checkpoint_step is not None:
                _write_status(spec, {"train": "diverged", "checkpoint_step": state.checkpoint_step})
                state = inspect_run(spec.run_dir, max_steps)
                say(f"diverged (NaN/Inf steps), last finite checkpoint at step {state.checkpoint_step}")
            elif code == INTERRUPTED_EXIT_CODE:  # stopped by a signal after a checkpoint: resumable
                result.status, result.message = "interrupted", tail
                result.seconds = time.perf_counter() - started
                say(f"interrupted at step {state.checkpoint_step} (checkpoint written); run again to resume")
                return result
            elif code != 0 or not state.trained:
                result.status, result.message = "train-failed", tail
                result.seconds = time.perf_counter() - started
                say(f"training failed (exit {code}):\n{tail}")
                return result
    command = evaluate_command(spec, options)
    say("evaluating")
    if options.dry_run:
        say("$ " + " ".join(command))
        return result
    code, tail = _run_logged(command, log_path, stop)
    result.evaluated = True
    result.seconds = time.perf_counter() - started
    if code != 0 and stop.signal is not None:  # stopped by the signal: evaluated again next time
        result.status, result.message = "interrupted", tail
        say("evaluation interrupted; run again to evaluate")
        return result
    if code != 0:
        result.status, result.message = "eval-failed", tail
        say(f"evaluation failed (exit {code}):\n{tail}")
        return result
    result.status = "diverged" if state.diverged else "complete"
    say(f"done in {result.seconds / 60:.1f} min")
    return result


def prepare_data(plan: Sequence[RunSpec], echo: Callable[[str], None] = print) -> None:
    """Write the on-disk caches of every cached dataset of the plan once, before the runs start.

    Without this, parallel runs would each render the same procedural scenes (the cache is race-safe but
    the work would be repeated).
    """
    from implicit_slots.training.data import build_dataset_split

    done: set[str] = set()
    for spec in plan:
        data = spec.config.data
        if data.cache_dir is None:
            continue
        splits = ["train", spec.evaluation.split]
        if spec.config.training.validation.every > 0:
            splits.append(spec.config.training.validation.split)
        for split in splits:
            key = repr((data, split))
            if key in done:
                continue
            done.add(key)
            started = time.perf_counter()
            dataset = build_dataset_split(data, split)
            echo(
                f"[reproduce] data {data.name} {split}: {len(dataset)} samples ready "  # type: ignore[arg-type]
                f"({time.perf_counter() - started:.0f} s)"
            )


def write_stage_config(spec: RunSpec) -> Path:
    """Write the config file of a dVAE stage (``spec.config_path``; seed 0, the seed is an override)."""
    seedless = copy.deepcopy(spec.config)
    seedless.training.seed = 0
    save_config(seedless, spec.config_path)
    return spec.config_path


def execute_plan(plan: Sequence[RunSpec], options: ExecutionOptions) -> list[JobResult]:
    """Run (or skip, resume, evaluate) every run of the plan, ``options.jobs`` at a time.

    The dVAE stages of two-stage SLATE run first; a run whose stage failed does not start (status
    ``stage-failed``). Results come back in plan order.

    Raises:
        ReproduceError: a run folder holds a different experiment or an unreadable checkpoint (before
            any run starts).
    """
    for spec in plan:
        _check_same_experiment(spec)
        inspect_run(spec.run_dir, spec.config.training.max_steps)  # an unreadable checkpoint stops here
    if not options.dry_run:
        prepare_data(plan, options.echo)
        for spec in plan:
            if spec.kind == "dvae-stage":
                write_stage_config(spec)
    lock = threading.Lock()
    stages = [spec for spec in plan if spec.kind == "dvae-stage"]
    with _StopForwarder() as stop, ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        stage_results = list(pool.map(lambda spec: _run_one(spec, options, lock, stop), stages))
        failed = {r.spec.run_dir: r for r in stage_results if r.status in ("train-failed", "eval-failed")}

        def run_after_stage(spec: RunSpec) -> JobResult:
            if spec.dvae_stage is not None and spec.dvae_stage in failed:
                message = f"its dVAE stage {spec.dvae_stage} failed ({failed[spec.dvae_stage].status})"
                with lock:
                    options.echo(f"[reproduce] {spec.label}: not started: {message}")
                return JobResult(spec, status="stage-failed", message=message)
            return _run_one(spec, options, lock, stop)

        runs = [spec for spec in plan if spec.kind != "dvae-stage"]
        run_results = list(pool.map(run_after_stage, runs))
    if stop.signal is not None:
        waiting = sum(r.message == NOT_STARTED for r in (*stage_results, *run_results))
        options.echo(
            f"[reproduce] stopped by {stop.describe()}: running runs checkpointed, {waiting} not started; "
            "run the same command again to resume"
        )
    by_dir = {id(r.spec): r for r in (*stage_results, *run_results)}
    return [by_dir[id(spec)] for spec in plan]
