"""Plan and execute the runs of an experiment: one run folder per (config, seed), J subprocesses at a time.

Each run is ``python -m implicit_slots.cli train CONFIG --run-dir DIR training.seed=S ...`` followed by
``python -m implicit_slots.cli evaluate DIR ...``, each a subprocess with ``OMP_NUM_THREADS=1`` and
``training.num_threads=1``. A run is *complete* when ``checkpoints/last.pt`` is at ``training.max_steps``
and ``eval/metrics.json`` evaluates that checkpoint; complete runs are skipped, interrupted ones resumed
(``train --resume``), trained-but-unevaluated ones only evaluated.

Configs of different table cells / figure curves that resolve to the same experiment (e.g. Fig. 5's
"all tricks" curve and Table 3's CLEVR-Mirror cell) share one run folder, named after the alphabetically
first such config: the run is trained once and read by every figure that shows it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from implicit_slots.config import ExperimentConfig, config_to_dict, load_config
from implicit_slots.reproduce.experiments import (
    CONFIG_ROOT,
    SCALES,
    EvaluationPlan,
    Experiment,
    config_names,
)
from implicit_slots.training import DIVERGED_EXIT_CODE, INTERRUPTED_EXIT_CODE

__all__ = [
    "RUN_STATUS_FILE",
    "ReproduceError",
    "RunSpec",
    "RunState",
    "build_plan",
    "execute_plan",
    "inspect_run",
]

RUN_STATUS_FILE = "reproduce_status.json"


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
    """

    config_name: str
    aliases: tuple[str, ...]
    config_path: Path
    seed: int
    overrides: tuple[str, ...]
    run_dir: Path
    config: ExperimentConfig
    evaluation: EvaluationPlan

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


def build_plan(
    experiments: Sequence[Experiment],
    scale: str,
    seeds: int,
    runs_dir: Path,
    *,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
) -> list[RunSpec]:
    """The runs of ``experiments`` at ``scale`` for seeds ``0 .. seeds-1``, deduplicated.

    Args:
        experiments: the experiments to run (in order; their runs keep that order).
        scale: ``cpu`` or ``paper``.
        seeds: number of seeds (``training.seed = 0 .. seeds-1``).
        runs_dir: where run folders go (``runs_dir/<config>/seed<s>``).
        overrides: dotted overrides applied to every run (e.g. ``data.root=...``).
        only: glob patterns on config names; when given, only matching curves run.

    Raises:
        ReproduceError: an invalid scale / seed count, or a config that does not load.
    """
    import fnmatch

    from implicit_slots.config import ConfigError

    if scale not in SCALES:
        raise ReproduceError(f"unknown scale {scale!r}; valid scales: {list(SCALES)}")
    if seeds < 1:
        raise ReproduceError(f"--seeds must be >= 1, got {seeds}")
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
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), []).append(name)
    canonical = {name: names[0] for names in groups.values() for name in names}
    aliases = {names[0]: tuple(names) for names in groups.values()}
    resolved: dict[tuple[str, int], ExperimentConfig] = {}

    def resolve(name: str, seed: int) -> ExperimentConfig:
        if (name, seed) not in resolved:
            try:
                resolved[name, seed] = load_config(
                    CONFIG_ROOT / scale / f"{name}.yaml", _run_overrides(seed, overrides)
                )
            except ConfigError as error:
                raise ReproduceError(str(error)) from error
        return resolved[name, seed]

    plan: list[RunSpec] = []
    seen: set[tuple[str, int]] = set()
    for experiment, curve in wanted:
        for seed in range(seeds):
            if curve.config not in canonical:
                raise ReproduceError(f"config {experiment.config_path(curve, scale)} does not exist")
            name = canonical[curve.config]
            if (name, seed) in seen:
                continue
            seen.add((name, seed))
            plan.append(
                RunSpec(
                    config_name=name,
                    aliases=aliases[name],
                    config_path=CONFIG_ROOT / scale / f"{name}.yaml",
                    seed=seed,
                    overrides=_run_overrides(seed, overrides),
                    run_dir=runs_dir / name / f"seed{seed}",
                    config=resolve(name, seed),
                    evaluation=experiment.evaluation.get(scale, EvaluationPlan()),
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
    """Read the state of a run folder (checkpoint step, evaluated step, divergence)."""
    from implicit_slots.training.checkpoint import load_checkpoint
    from implicit_slots.training.loop import CHECKPOINT_NAME

    checkpoint_step: int | None = None
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        try:
            checkpoint_step = int(load_checkpoint(checkpoint, map_location="cpu")["step"])
        except (OSError, ValueError, KeyError, RuntimeError):
            checkpoint_step = None
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
    old, new = config_to_dict(existing), config_to_dict(spec.config)
    for values in (old, new):
        values.pop("provenance", None)
        values["training"].pop("max_steps", None)
    if old != new:
        raise ReproduceError(
            f"run folder {spec.run_dir} holds a different experiment than {spec.config_path} with "
            f"{list(spec.overrides)}; move it away or choose another --runs-dir"
        )


@dataclass
class JobResult:
    """What happened to one run in :func:`execute_plan`.

    Attributes:
        spec: the run.
        trained: training ran in this invocation.
        evaluated: evaluation ran in this invocation.
        status: ``complete``, ``diverged``, ``interrupted`` (resumable), ``train-failed`` or ``eval-failed``.
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


def _run_logged(command: list[str], log_path: Path | None) -> tuple[int, str]:
    """Run a subprocess, appending its output to ``log_path``; (return code, last lines of output)."""
    env = _subprocess_env()
    if log_path is None:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        output = completed.stdout + completed.stderr
        return completed.returncode, "\n".join(output.strip().splitlines()[-5:])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        returncode = subprocess.run(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return returncode, "\n".join(lines[-5:])


def _write_status(spec: RunSpec, values: dict[str, Any]) -> None:
    path = spec.run_dir / RUN_STATUS_FILE
    path.write_text(json.dumps(values, indent=2) + "\n")


def _run_one(spec: RunSpec, options: ExecutionOptions, lock: threading.Lock) -> JobResult:
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
    log_path = None
    if options.logs_dir is not None:
        log_path = options.logs_dir / f"{spec.config_name}_seed{spec.seed}.log"
    if not state.trained or (state.diverged and options.retry_diverged):
        if state.checkpoint_step is None and spec.run_dir.exists():
            # No checkpoint: nothing to resume (killed before the first one); start afresh.
            shutil.rmtree(spec.run_dir)
        command = train_command(spec, state, options.python)
        what = (
            f"resuming from step {state.checkpoint_step}" if state.checkpoint_step is not None else "training"
        )
        say(f"{what} ({max_steps} steps)")
        if options.dry_run:
            say("$ " + " ".join(command))
        else:
            code, tail = _run_logged(command, log_path)
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
    code, tail = _run_logged(command, log_path)
    result.evaluated = True
    result.seconds = time.perf_counter() - started
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


def execute_plan(plan: Sequence[RunSpec], options: ExecutionOptions) -> list[JobResult]:
    """Run (or skip, resume, evaluate) every run of the plan, ``options.jobs`` at a time.

    Raises:
        ReproduceError: a run folder holds a different experiment.
    """
    for spec in plan:
        _check_same_experiment(spec)
    if not options.dry_run:
        prepare_data(plan, options.echo)
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        return list(pool.map(lambda spec: _run_one(spec, options, lock), plan))
