"""Experiment configuration: typed dataclasses are the schema, YAML files hold the values.

A config file has four sections (every field is documented on its dataclass below)::

    model:                  # `name` + the fields of that model's registered config dataclass
      name: slate
      num_slots: 7
    data:        {name: ..., root: ..., image_size: 96, ...}             # DataConfig
    training:    {max_steps: ..., batch_size: ..., optimizer: ..., ...}   # TrainingConfig
    diagnostics: {every: 500, ...}                                        # DiagnosticsConfig

A file may start with ``base: PATH`` (relative to the file): it then holds only what differs from that
file, merged onto it key by key (mappings merge recursively, the file's value wins, lists are replaced).
Bases may have bases; a cycle or a missing file is a :class:`ConfigError` naming the chain. This is how
the arms of one paper experiment share their recipe (``configs/paper/cpu/_base_slate.yaml`` and the files
naming it), so two arms differ only in the lines they state. The config saved into a run folder is the
resolved one, without ``base:``.

Values come in three layers, later ones winning: the dataclass defaults, the YAML file (its ``base:``
chain merged), and dotted ``KEY=VALUE`` overrides from the command line (``training.max_steps=1000``,
``training.optimizer.groups.dvae.lr=3e-4``, ``model.num_slots=11``). The ``model:`` section is checked
against the dataclass the model registered (``get_model_spec(name).config_type``), so
``model.num_slot=3`` is an error exactly like ``training.max_step=3``. Unknown keys, wrong types, missing
required values and values outside their allowed set all raise :class:`ConfigError`, naming the file or
override, the dotted key and the problem. Each section's dataclass checks its own values (``validate``;
the model section's is the model config's own); validators never edit, and the one normalisation of
loading (:func:`normalise_switches`) is a separate step before them.

Training tricks the paper ablates are independent switches, each off when null or 0:
``training.grad_clip.norm`` (null / l2 / inf), ``training.optimizer.warmup_steps`` (and per group),
``training.lr_decay.kind`` (null / exponential / plateau), ``training.hyperparameter_schedules``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "CONFIGS_DIR",
    "ConfigError",
    "DataConfig",
    "DiagnosticsConfig",
    "ExperimentConfig",
    "GradClipConfig",
    "HyperparameterScheduleConfig",
    "LRDecayConfig",
    "ModelSection",
    "OptimizerConfig",
    "ParamGroupConfig",
    "ProvenanceConfig",
    "SplitSizes",
    "TrainingConfig",
    "ValidationConfig",
    "config_differences",
    "config_to_dict",
    "describe_keys",
    "load_config",
    "normalise_switches",
    "save_config",
    "validate_config",
]

SECTIONS = ("model", "data", "training", "diagnostics", "provenance")
BASE_KEY = "base"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("adam", "adamw")
CLIP_NORMS = ("l2", "inf")
LR_DECAY_KINDS = ("exponential", "plateau")
SCHEDULE_KINDS = ("constant", "linear", "cosine", "exponential")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source, the key and the problem."""


def _packaged_configs_dir() -> Path:
    """The folder of the config files shipped as package data (``implicit_slots/configs``)."""
    folder = importlib.resources.files("implicit_slots") / "configs"
    if not isinstance(folder, Path):  # e.g. a zipped install, where package data are not plain files
        raise RuntimeError(f"implicit_slots is not installed as plain files; its configs are at {folder}")
    return folder


CONFIGS_DIR: Path = _packaged_configs_dir()
"""Shipped configs: ``slate_clevr_lite.yaml`` (the main job) and the paper's under ``paper/<scale>/``.

A checkout's top-level ``configs`` is a link to this folder, so ``configs/...`` paths work from the
repository root; installed from a wheel, the files are found here.
"""


def _check(condition: bool, source: str, key: str, message: str) -> None:
    """Raise ``ConfigError("<source>: key '<key>': <message>")`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{source}: key {key!r}: {message}")


def _check_choice(value: str | None, valid: tuple[str, ...], key: str, source: str, nullable: bool) -> None:
    """``value`` is one of ``valid`` (or null, when ``nullable``)."""
    if nullable and value is None:
        return
    allowed = list(valid) + (["null"] if nullable else [])
    _check(value in valid, source, key, f"invalid value {value!r}; valid: {allowed}")


# ----------------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------------


@dataclass
class SplitSizes:
    """How many samples each split holds (null: the dataset's own size / default).

    Attributes:
        train: number of training samples.
        val: number of validation samples (used by ``training.validation``).
        test: number of test samples (used by ``implicit-slots evaluate``).
    """

    train: int | None = None
    val: int | None = None
    test: int | None = None


@dataclass
class DataConfig:
    """The ``data:`` section, passed to ``implicit_slots.data.build_dataset``.

    Attributes:
        name: registered dataset name (required).
        root: folder of the dataset files on disk (null: the dataset's default / procedural).
        image_size: side length in pixels of the (square) images the model receives.
        seed: seed of procedural generation (which scenes exist), independent of ``training.seed``.
        num_samples: number of samples per split.
        options: dataset-specific options, passed through unchanged (e.g. ``{max_objects: 6}``).
        cache_dir: folder where generated / converted data may be cached (null: no cache).
        num_workers: DataLoader worker processes (0: load in the training process).
    """

    name: str = MISSING
    root: str | None = None
    image_size: int = 64
    seed: int = 0
    num_samples: SplitSizes = field(default_factory=SplitSizes)
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    num_workers: int = 0

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` (naming ``source`` and the key) on a value out of range."""
        _check(self.image_size >= 1, source, "data.image_size", f"must be >= 1, got {self.image_size}")
        _check(self.num_workers >= 0, source, "data.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class ParamGroupConfig:
    """Per-parameter-group overrides of the optimizer settings; null inherits ``training.optimizer``.

    Group names are those of the model's ``parameter_groups()`` (e.g. SLATE: ``dvae``, ``main``).

    Attributes:
        lr: peak learning rate of the group.
        warmup_steps: linear warm-up length of the group in steps (0: none).
        weight_decay: weight decay of the group.
    """

    lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None

    def validate(self, source: str, key: str) -> None:
        """Raise :class:`ConfigError` on a value out of range; ``key`` is the group's dotted key."""
        if self.lr is not None:
            _check(self.lr >= 0, source, f"{key}.lr", f"must be >= 0, got {self.lr}")
        if self.warmup_steps is not None:
            _check(
                self.warmup_steps >= 0,
                source,
                f"{key}.warmup_steps",
                f"must be >= 0, got {self.warmup_steps}",
            )
        if self.weight_decay is not None:
            _check(
                self.weight_decay >= 0,
                source,
                f"{key}.weight_decay",
                f"must be >= 0, got {self.weight_decay}",
            )


@dataclass
class OptimizerConfig:
    """``training.optimizer``: one optimizer over all parameter groups.

    Attributes:
        name: ``adam`` or ``adamw``.
        lr: peak learning rate of every group without its own ``lr``.
        betas: Adam's (beta1, beta2).
        eps: Adam's epsilon.
        weight_decay: weight decay of every group without its own (decoupled for ``adamw``).
        warmup_steps: linear learning-rate warm-up of every group without its own (0: off). The factor at
            step ``t`` (0-based) is ``min(1, (t + 1) / warmup_steps)`` as in official SLATE.
        groups: per-group overrides keyed by the model's parameter-group names; a name the model does not
            have is an error when training starts.
    """

    name: str = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    groups: dict[str, ParamGroupConfig] = field(default_factory=dict)

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on an unknown optimizer or a value out of range."""
        key = "training.optimizer"
        _check_choice(self.name, OPTIMIZERS, f"{key}.name", source, nullable=False)
        _check(len(self.betas) == 2, source, f"{key}.betas", f"needs 2 values, got {self.betas}")
        _check(
            all(0.0 <= beta < 1.0 for beta in self.betas),
            source,
            f"{key}.betas",
            f"each must be in [0, 1), got {self.betas}",
        )
        _check(self.lr >= 0, source, f"{key}.lr", f"must be >= 0, got {self.lr}")
        _check(self.eps >= 0, source, f"{key}.eps", f"must be >= 0, got {self.eps}")
        _check(
            self.weight_decay >= 0,
            source,
            f"{key}.weight_decay",
            f"must be >= 0, got {self.weight_decay}",
        )
        _check(
            self.warmup_steps >= 0, source, f"{key}.warmup_steps", f"must be >= 0, got {self.warmup_steps}"
        )
        for name, group in self.groups.items():
            group.validate(source, f"{key}.groups.{name}")


@dataclass
class GradClipConfig:
    """``training.grad_clip``: gradient clipping over all parameters together (off when ``norm`` is null).

    Attributes:
        norm: null / ``none`` (off), ``l2`` (global L2 norm, as PyTorch/Lightning default) or ``inf``
            (largest absolute gradient entry, as official SLATE's ``clip_grad_norm_(..., 'inf')``).
        max_norm: gradients are scaled by ``min(1, max_norm / norm)``; must be > 0 when ``norm`` is set.
    """

    norm: str | None = None
    max_norm: float = 1.0

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on an unknown norm or a non-positive ``max_norm`` while clipping."""
        _check_choice(self.norm, CLIP_NORMS, "training.grad_clip.norm", source, nullable=True)
        if self.norm is not None:
            _check(
                self.max_norm > 0,
                source,
                "training.grad_clip.max_norm",
                f"must be > 0 when grad_clip.norm is {self.norm!r}, got {self.max_norm}",
            )


@dataclass
class LRDecayConfig:
    """``training.lr_decay``: a decay factor multiplying every group's learning rate (off when null).

    Attributes:
        kind: null / ``none`` (off), ``exponential`` (``0.5 ** ((t - start_step) / half_life)`` for
            ``t >= start_step``, as Slot Attention / STEVE) or ``plateau`` (multiply by ``factor`` when the
            validation loss has not improved for ``patience`` consecutive validations, as official SLATE;
            needs ``training.validation.every > 0``).
        half_life: steps per halving for ``exponential``.
        start_step: ``exponential`` only: the step where decay starts (0: from the first step, as Slot
            Attention; set it to the warm-up length to decay after warm-up, as OCLF's SLATE).
        patience: ``plateau`` only: validations without improvement before the factor is applied.
        factor: ``plateau`` only: multiplier applied at each plateau (SLATE: 0.5).
        min_delta: ``plateau`` only: a validation loss counts as an improvement when it is below
            ``best - min_delta``.
    """

    kind: str | None = None
    half_life: int = 0
    start_step: int = 0
    patience: int = 4
    factor: float = 0.5
    min_delta: float = 0.0

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on an unknown kind or a value the kind cannot use.

        That ``plateau`` needs validation is a rule between sections, checked by
        :meth:`TrainingConfig.validate`.
        """
        key = "training.lr_decay"
        _check_choice(self.kind, LR_DECAY_KINDS, f"{key}.kind", source, nullable=True)
        if self.kind == "exponential":
            _check(self.half_life > 0, source, f"{key}.half_life", "must be > 0 for exponential")
            _check(self.start_step >= 0, source, f"{key}.start_step", "must be >= 0")
        if self.kind == "plateau":
            _check(self.patience >= 1, source, f"{key}.patience", "must be >= 1 for plateau")
            _check(0 < self.factor < 1, source, f"{key}.factor", "must be in (0, 1) for plateau")


@dataclass
class HyperparameterScheduleConfig:
    """One entry of ``training.hyperparameter_schedules`` (set through ``model.set_hyperparameters``).

    With ``u = clamp((t - start_step) / steps, 0, 1)`` at step ``t``:

    - ``constant``: ``start``;
    - ``linear``: ``start + (end - start) * u``;
    - ``cosine``: ``end + (start - end) * (1 + cos(pi * u)) / 2`` (SLATE's Gumbel temperature:
      start 1.0, end 0.1, steps 30000);
    - ``exponential``: ``start * (end / start) ** u`` (start and end > 0).

    Attributes:
        kind: one of the above.
        start: value at and before ``start_step``.
        end: value from ``start_step + steps`` on.
        steps: length of the transition (> 0 unless ``constant``).
        start_step: step where the transition begins.
    """

    kind: str = "constant"
    start: float = 0.0
    end: float = 0.0
    steps: int = 0
    start_step: int = 0

    def validate(self, source: str, key: str) -> None:
        """Raise :class:`ConfigError` on an unknown kind or a transition it cannot make."""
        _check_choice(self.kind, SCHEDULE_KINDS, f"{key}.kind", source, nullable=False)
        if self.kind != "constant":
            _check(self.steps > 0, source, f"{key}.steps", f"must be > 0 for {self.kind!r}")
        if self.kind == "exponential":
            _check(self.start > 0 and self.end > 0, source, key, "start and end must be > 0")


@dataclass
class ValidationConfig:
    """``training.validation``: periodic loss on a held-out split (needed by ``lr_decay.kind: plateau``).

    Attributes:
        every: validate every this many steps (0: off).
        split: dataset split to validate on.
        num_batches: at most this many batches per validation (null: the whole split).
        batch_size: validation batch size, global over ranks (null: ``training.batch_size``).
    """

    every: int = 0
    split: str = "val"
    num_batches: int | None = None
    batch_size: int | None = None

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on a value out of range."""
        key = "training.validation"
        _check(self.every >= 0, source, f"{key}.every", f"must be >= 0, got {self.every}")
        if self.num_batches is not None:
            _check(self.num_batches >= 1, source, f"{key}.num_batches", "must be >= 1")
        if self.batch_size is not None:
            _check(self.batch_size >= 1, source, f"{key}.batch_size", "must be >= 1")


@dataclass
class TrainingConfig:
    """The ``training:`` section.

    Attributes:
        max_steps: total number of training steps (optimizer updates attempted, skipped ones included).
        batch_size: global batch size; each of ``W`` data-parallel processes gets ``batch_size / W``.
        seed: seed of parameter initialisation, data order and every random draw during training.
        checkpoint_every: write ``checkpoints/last.pt`` every this many steps (0: only at the end / on
            interruption).
        log_every: write a metrics line (TensorBoard, metrics.jsonl, console) every this many steps.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16`` (autocast; meant for CUDA).
        num_threads: torch intra-op threads per process (null: leave torch's default).
        optimizer: optimizer, learning rates, warm-up, parameter groups.
        grad_clip: gradient clipping switch.
        lr_decay: learning-rate decay switch.
        hyperparameter_schedules: model hyperparameter name -> schedule, e.g.
            ``{gumbel_temperature: {kind: cosine, start: 1.0, end: 0.1, steps: 30000}}``.
        max_consecutive_bad_steps: a step whose loss or gradient is NaN/Inf is skipped; this many in a
            row stop the run with an error (>= 1).
        validation: periodic validation loss.
        ddp_find_unused_parameters: passed to DistributedDataParallel. On by default: under the implicit
            gradient estimators (Neumann, IFT) the learned slot initialisation (mu, log_sigma) gets no
            gradient, which DDP rejects unless this is on. Off saves one autograd-graph traversal per step
            for models that use every parameter in every step.
    """

    max_steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)
    lr_decay: LRDecayConfig = field(default_factory=LRDecayConfig)
    hyperparameter_schedules: dict[str, HyperparameterScheduleConfig] = field(default_factory=dict)
    max_consecutive_bad_steps: int = 10
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ddp_find_unused_parameters: bool = True

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on a value out of range, here or in a subsection."""
        _check_choice(self.device, DEVICES, "training.device", source, nullable=False)
        _check_choice(self.precision, PRECISIONS, "training.precision", source, nullable=False)
        _check(self.max_steps >= 0, source, "training.max_steps", f"must be >= 0, got {self.max_steps}")
        _check(self.batch_size >= 1, source, "training.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(
            self.checkpoint_every >= 0,
            source,
            "training.checkpoint_every",
            f"must be >= 0, got {self.checkpoint_every}",
        )
        _check(self.log_every >= 1, source, "training.log_every", f"must be >= 1, got {self.log_every}")
        if self.num_threads is not None:
            _check(
                self.num_threads >= 1, source, "training.num_threads", f"must be >= 1, got {self.num_threads}"
            )
        _check(
            self.max_consecutive_bad_steps >= 1,
            source,
            "training.max_consecutive_bad_steps",
            f"must be >= 1, got {self.max_consecutive_bad_steps}",
        )
        self.optimizer.validate(source)
        self.grad_clip.validate(source)
        self.lr_decay.validate(source)
        for name, schedule in self.hyperparameter_schedules.items():
            schedule.validate(source, f"training.hyperparameter_schedules.{name}")
        self.validation.validate(source)
        if self.lr_decay.kind == "plateau":
            _check(
                self.validation.every > 0,
                source,
                "training.validation.every",
                "must be > 0 when training.lr_decay.kind is 'plateau' (the plateau rule needs validation)",
            )


@dataclass
class DiagnosticsConfig:
    """The ``diagnostics:`` section: fixed-point and gradient diagnostics during training.

    Attributes:
        every: compute diagnostics every this many steps (0: off). Logged: forward relative residual of the
            slot-attention fixed point (per-sample mean and max over the batch), solver steps, gradient
            norm before clipping per parameter group and total, learning rates, and the Jacobian spectral
            norm of the slot-attention cell at its output.
        jacobian: include the Jacobian spectral norm (costs ``2 * jacobian_iterations`` cell passes).
        jacobian_iterations: power-iteration steps for the spectral norm.
        jacobian_max_samples: estimate it on at most this many samples of the batch.
        images_every: log ``model.visualise`` images to TensorBoard every this many steps (0: off).
        max_images: at most this many samples per logged image.
    """

    every: int = 0
    jacobian: bool = True
    jacobian_iterations: int = 20
    jacobian_max_samples: int = 8
    images_every: int = 0
    max_images: int = 8

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` on a value out of range."""
        for key in ("every", "images_every"):
            _check(getattr(self, key) >= 0, source, f"diagnostics.{key}", "must be >= 0")
        _check(self.jacobian_iterations >= 1, source, "diagnostics.jacobian_iterations", "must be >= 1")
        _check(self.jacobian_max_samples >= 1, source, "diagnostics.jacobian_max_samples", "must be >= 1")
        _check(self.max_images >= 1, source, "diagnostics.max_images", "must be >= 1")


@dataclass
class ProvenanceConfig:
    """Written by the engine into the run folder's ``config.yaml``; ignored as input.

    Attributes:
        package_version: ``implicit_slots.__version__`` of the run.
        git_commit: commit of the source tree, when it is a git checkout.
        git_dirty: whether the tree had uncommitted changes.
        created_at: UTC time the run folder was (re)written.
        command: the command line that started the run.
    """

    package_version: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    created_at: str | None = None
    command: str | None = None


@dataclass
class ModelSection:
    """The ``model:`` section: the registered model ``name`` plus its config dataclass.

    In YAML the section is flat (``name`` next to the model's fields); in Python the fields live in
    ``config``, an instance of ``get_model_spec(name).config_type``.
    """

    name: str
    config: Any


@dataclass
class ExperimentConfig:
    """A complete, validated experiment: what ``train`` and ``evaluate`` run."""

    model: ModelSection
    data: DataConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)

    def validate(self, source: str = "<config>") -> None:
        """Check every section's values (types were checked while loading); edits nothing.

        The model section is checked by its config dataclass's own ``validate()`` (which raises
        ``ValueError`` naming the ``model.`` key, since models sit below this module).

        Raises:
            ConfigError: naming ``source`` and the dotted key.
        """
        validate_model = getattr(self.model.config, "validate", None)
        if callable(validate_model):
            try:
                validate_model()
            except ValueError as error:
                raise ConfigError(f"{source}: {error}") from error
        self.data.validate(source)
        # Models with an `image_size` take exactly that size; a different one fails at the first step.
        model_size = getattr(self.model.config, "image_size", None)
        _check(
            model_size is None or model_size == self.data.image_size,
            source,
            "data.image_size",
            f"{self.data.image_size} differs from model.image_size ({model_size}); the model takes only "
            "images of its own size",
        )
        self.training.validate(source)
        self.diagnostics.validate(source)


@dataclass
class _RestSchema:
    """Everything but ``model:`` (validated separately against the model's own dataclass)."""

    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _describe(error: OmegaConfBaseException, prefix: str = "") -> tuple[str, str]:
    """(dotted key, first line of the message) of an OmegaConf error."""
    key = getattr(error, "full_key", None) or ""
    key = f"{prefix}{key}" if key else prefix.rstrip(".")
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return key or "<root>", message


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, DictConfig]]:
    parsed = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. training.max_steps=1000")
        key = item.split("=", 1)[0].strip()
        if key.split(".", 1)[0] not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; top-level sections: {list(SECTIONS)}")
        try:
            parsed.append((item, OmegaConf.from_dotlist([item])))
        except OmegaConfBaseException as error:
            raise ConfigError(f"override {item!r}: {_describe(error)[1]}") from error
        except yaml.YAMLError as error:  # the value is parsed as YAML: `betas=[0.9` misses its bracket
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"override {item!r}: not valid YAML ({problem})") from error
    return parsed


def _chain_text(chain: Sequence[Path]) -> str:
    return " -> ".join(str(path) for path in chain)


def _yaml_problem(error: Exception) -> str:
    """One line for a YAML parse error: the problem and where it is (PyYAML's own text has 2-4 lines)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _read_file(path: Path, chain: Sequence[Path]) -> DictConfig:
    """One YAML file's own values (its ``base:`` key included), with the top level checked."""
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        if len(chain) == 1:
            raise ConfigError(f"config file {str(path)!r} {problem}")
        raise ConfigError(f"base chain {_chain_text(chain)}: base file {str(path)!r} {problem}")
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a text file (not UTF-8 at byte {error.start}); expected YAML"
        ) from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file ({error.strerror or error})") from error
    if loaded is None or (isinstance(loaded, DictConfig) and len(loaded) == 0):
        return OmegaConf.create({})
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping with sections {list(SECTIONS)}")
    unknown = [str(key) for key in loaded if key not in (BASE_KEY, *SECTIONS)]
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {unknown}; valid: {BASE_KEY!r} and sections {list(SECTIONS)}"
        )
    for section in SECTIONS:
        if section in loaded and loaded[section] is not None and not isinstance(loaded[section], DictConfig):
            raise ConfigError(f"{path}: section {section!r} must be a mapping, got {loaded[section]!r}")
    return loaded


def _load_yaml(path: Path, chain: Sequence[Path] = ()) -> DictConfig:
    """The values of ``path`` merged onto those of its ``base:`` chain (the file's own values win).

    Args:
        path: the YAML file.
        chain: the files that named ``path`` as their base, outermost first (empty for the file itself).

    Raises:
        ConfigError: invalid YAML or top level, a missing file or a ``base:`` cycle (naming the chain).
    """
    chain = (*chain, path)
    if path.resolve() in {earlier.resolve() for earlier in chain[:-1]}:
        raise ConfigError(f"base chain {_chain_text(chain)} is a cycle: a file cannot be its own base")
    loaded = _read_file(path, chain)
    if BASE_KEY not in loaded:
        return loaded
    base = loaded.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: key {BASE_KEY!r} must be a path relative to the file, got {base!r}")
    merged = _load_yaml(path.parent / base, chain)
    # An empty section (``diagnostics:`` with nothing below) changes nothing.
    own = {key: value for key, value in loaded.items() if value is not None}
    return _merge(merged, OmegaConf.create(own), _chain_text(chain))


def _merge(base: DictConfig, layer: Any, source: str, prefix: str = "") -> DictConfig:
    try:
        merged = OmegaConf.merge(base, layer)
    except OmegaConfBaseException as error:
        key, message = _describe(error, prefix)
        raise ConfigError(f"{source}: key {key!r}: {message}") from error
    assert isinstance(merged, DictConfig)
    return merged


def _to_object(config: DictConfig, source: str, prefix: str = "") -> Any:
    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as error:
        key, message = _describe(error, prefix)
        if "missing mandatory value" in message.lower():
            raise ConfigError(f"{source}: required key {key!r} has no value") from error
        raise ConfigError(f"{source}: key {key!r}: {message}") from error


def _model_schema(name: str, source: str) -> DictConfig:
    from implicit_slots.models.registry import get_model_spec

    try:
        spec = get_model_spec(name)
    except KeyError as error:
        raise ConfigError(f"{source}: key 'model.name': {error.args[0]}") from error
    if not dataclasses.is_dataclass(spec.config_type):
        raise ConfigError(f"model {name!r} registered a config type that is not a dataclass")
    return OmegaConf.structured(spec.config_type)


# Model keys that older versions wrote into every saved run config and that no longer exist, with the value
# that meant "off". A saved config that has one at that value loads (the key is dropped: it changed
# nothing); any other value is an error, because the run used a feature this version does not have.
REMOVED_MODEL_KEYS: dict[str, dict[str, Any]] = {
    "slate": {"token_dropout": 0.0, "scheduled_sampling": 0.0},  # removed 2026-12-01, never in SLATE
}


def _drop_removed_keys(model_name: str, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` without the removed keys of :data:`REMOVED_MODEL_KEYS` that hold their "off" value."""
    removed = REMOVED_MODEL_KEYS.get(model_name, {})
    for key in sorted(set(values) & set(removed)):
        if values[key] != removed[key]:
            raise ConfigError(
                f"{source}: key 'model.{key}' = {values[key]!r}: this option was removed from {model_name} "
                f"(only {removed[key]!r}, off, is accepted in old run configs); this version cannot "
                "reproduce a run that used it"
            )
    return {k: v for k, v in values.items() if k not in removed}


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate an experiment config.

    Args:
        path: YAML file (or None: defaults + overrides only).
        overrides: dotted ``KEY=VALUE`` strings applied after the file, in order.

    Returns:
        The validated :class:`ExperimentConfig`.

    Raises:
        ConfigError: unknown key, wrong type, missing required value or value outside its allowed set;
            the message names the file or override and the dotted key.
    """
    file_source = str(path) if path is not None else "<defaults>"
    loaded = _load_yaml(Path(path)) if path is not None else OmegaConf.create({})
    layers = [(f"override {item!r}", layer) for item, layer in _parse_overrides(overrides)]
    return _build(file_source, loaded, layers)


def _build(file_source: str, loaded: DictConfig, overrides: list[tuple[str, DictConfig]]) -> ExperimentConfig:
    """Merge ``loaded`` and the override layers onto the schema, convert and validate."""
    # The model name decides the schema of the model section: the last override wins over the file.
    model_name: Any = None
    name_source = file_source
    if "model" in loaded and loaded.model is not None:
        model_name = loaded.model.get("name")
    for override_source, layer in overrides:
        if "model" in layer and "name" in layer.model:
            model_name, name_source = layer.model.name, override_source
    if model_name is None:
        raise ConfigError(f"{file_source}: required key 'model.name' has no value")
    if not isinstance(model_name, str):
        raise ConfigError(f"{name_source}: key 'model.name' must be a string, got {model_name!r}")

    model_cfg = _model_schema(model_name, name_source)
    rest_cfg = OmegaConf.structured(_RestSchema)
    for source, layer in [(file_source, loaded), *overrides]:
        model_layer = layer.get("model")
        if model_layer is not None:
            model_values = _drop_removed_keys(
                model_name, {k: v for k, v in model_layer.items() if k != "name"}, source
            )
            model_cfg = _merge(model_cfg, OmegaConf.create(model_values), source, prefix="model.")
        rest_layer = {k: v for k, v in layer.items() if k != "model"}
        rest_cfg = _merge(rest_cfg, OmegaConf.create(rest_layer), source, prefix="")

    source = file_source if not overrides else f"{file_source} + overrides"
    model_config = _to_object(model_cfg, source, prefix="model.")
    rest: _RestSchema = _to_object(rest_cfg, source)
    config = ExperimentConfig(
        model=ModelSection(name=model_name, config=model_config),
        data=rest.data,
        training=rest.training,
        diagnostics=rest.diagnostics,
        provenance=rest.provenance,
    )
    normalise_switches(config.training)
    config.validate(source)
    return config


def validate_config(config: ExperimentConfig, source: str = "<config>") -> None:
    """Check a config built in Python (``load_config`` already does this); see
    :meth:`ExperimentConfig.validate`.

    Raises:
        ConfigError: naming ``source`` and the dotted key.
    """
    config.validate(source)


def normalise_switches(training: TrainingConfig) -> None:
    """Spelled-out ``"none"`` in a switch (``grad_clip.norm``, ``lr_decay.kind``) becomes null.

    The one step of loading that edits values; it runs before validation, which never edits.
    """
    if training.grad_clip.norm == "none":
        training.grad_clip.norm = None
    if training.lr_decay.kind == "none":
        training.lr_decay.kind = None


# ----------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config as plain YAML-ready data, with the flat ``model:`` section of the file format."""
    model_values = OmegaConf.to_container(OmegaConf.structured(config.model.config))
    assert isinstance(model_values, dict)
    out: dict[str, Any] = {"model": {"name": config.model.name, **model_values}}
    for section in ("data", "training", "diagnostics", "provenance"):
        values = OmegaConf.to_container(OmegaConf.structured(getattr(config, section)))
        out[section] = values
    return out


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(
    old: ExperimentConfig, new: ExperimentConfig, ignore: Sequence[str] = ("provenance", "training.max_steps")
) -> list[str]:
    """The dotted keys whose values differ between two configs, sorted; keys equal to or under an entry of
    ``ignore`` are left out (by default the provenance and the step budget, which a resumed run may
    extend)."""
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))

    def ignored(key: str) -> bool:
        return any(key == prefix or key.startswith(prefix + ".") for prefix in ignore)

    return sorted(key for key in a.keys() | b.keys() if not ignored(key) and a.get(key) != b.get(key))


def describe_keys(keys: Sequence[str], limit: int = 5) -> str:
    """Keys for a message: the first ``limit``, then how many more."""
    more = len(keys) - limit
    return ", ".join(keys[:limit]) + (f" and {more} more" if more > 0 else "")


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write ``config`` as YAML that :func:`load_config` reads back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A validated copy of ``config`` with dotted overrides applied (for Python callers).

    Args:
        config: a validated config.
        overrides: dotted key -> value, e.g. ``{"training.max_steps": 10, "model.num_slots": 5}``.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    layers = []
    for key, value in overrides.items():
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        if key.split(".", 1)[0] not in SECTIONS:
            raise ConfigError(f"override {key!r}: unknown key; top-level sections: {list(SECTIONS)}")
        layers.append((f"override {key!r}", OmegaConf.create(nested)))
    return _build("<config>", OmegaConf.create(config_to_dict(config)), layers)


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate plain data in the file format (e.g. a config stored inside a checkpoint) as a config.

    Raises:
        ConfigError: as :func:`load_config`; the message names ``source``.
    """
    return _build(source, OmegaConf.create(dict(data)), [])
