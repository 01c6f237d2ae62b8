"""The dVAE alone (model ``dvae``): the first stage of two-stage SLATE, and loading its weights into SLATE.

Two-stage SLATE trains SLATE's tokenizer first, on its own, and then trains slot attention and the decoder on
the tokens of that fixed dVAE (``model.dvae_init`` + ``model.freeze_dvae`` of a ``slate`` config). Official
SLATE trains both jointly; the two-stage option lets every arm of a comparison read the same tokens.

:class:`DvaeModel` is SLATE's :class:`~implicit_slots.models.slate.dvae.DiscreteVAE` under the same
attribute name (``dvae``), trained exactly as inside SLATE: one Gumbel-softmax draw per step at the
scheduled temperature (``training.hyperparameter_schedules.gumbel_temperature``), the relaxed sample
decoded, the MSE summed per image and averaged over images, the parameter group named ``dvae``. Its state
dict is therefore SLATE's ``dvae.*`` entries and nothing else.

:func:`load_dvae_weights` reads a run folder or checkpoint of a ``dvae`` or a ``slate`` run (weights only)
and copies its dVAE into a model, after checking that the image size and the vocabulary match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.models.slate.dvae import PATCH_SIZE, DiscreteVAE, sample_gumbel_tokens
from implicit_slots.slot_attention import check_positive_integers

DVAE_PREFIX = "dvae."  # state-dict prefix of the dVAE in both DvaeModel and Slate
CHECKPOINT_IN_RUN = Path("checkpoints") / "last.pt"  # where `implicit-slots train` writes a run's checkpoint


@dataclass
class DvaeConfig:
    """The ``model:`` section of ``name: dvae``; the names and defaults are those of ``SlateConfig``.

    Attributes:
        image_size: side of the square input images (multiple of 4).
        vocab_size: dVAE vocabulary size V.
        dvae_hidden_channels: width of the dVAE convolutions.
        gumbel_temperature: initial Gumbel-softmax temperature (the engine anneals it).
    """

    image_size: int = 64
    vocab_size: int = 1024
    dvae_hidden_channels: int = 64
    gumbel_temperature: float = 1.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``model.`` key of a value out of range (``load_config`` calls
        this; the model checks that ``image_size`` is a multiple of 4)."""
        check_positive_integers(self, ("image_size", "vocab_size", "dvae_hidden_channels"))
        if self.gumbel_temperature <= 0:
            raise ValueError(f"model.gumbel_temperature must be > 0, got {self.gumbel_temperature!r}")


@dataclass
class DvaeOutput(ModelOutput):
    """What :meth:`DvaeModel.forward` returns.

    Attributes:
        slot_attention: always None: the dVAE alone has no slot attention (train it with
            ``diagnostics.every: 0``; the fixed-point diagnostics have nothing to measure).
        reconstruction: the dVAE's reconstruction (B, 3, H, W), unclamped: of the relaxed Gumbel sample in
            training, of the argmax tokens in eval mode.
        tokens: (B, T) long: the hard tokens of the same draw in training, the argmax tokens in eval mode.
    """

    reconstruction: Tensor
    tokens: Tensor


class DvaeModel(ObjectCentricModel):
    """SLATE's discrete VAE trained on its own (the first stage of two-stage SLATE).

    Example:
        >>> model = DvaeModel(image_size=16, vocab_size=8, dvae_hidden_channels=8)
        >>> out = model({"image": torch.rand(2, 3, 16, 16)})
        >>> out.reconstruction.shape, out.tokens.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 16]))
    """

    def __init__(
        self,
        image_size: int,
        *,
        vocab_size: int = 1024,
        dvae_hidden_channels: int = 64,
        gumbel_temperature: float = 1.0,
    ):
        """Create the model.

        Args:
            image_size: side of the square input images (a multiple of 4).
            vocab_size: vocabulary size V.
            dvae_hidden_channels: width of the dVAE convolutions (SLATE: 64).
            gumbel_temperature: initial Gumbel-softmax temperature > 0 (scheduled by the engine).
        """
        super().__init__()
        if image_size <= 0 or image_size % PATCH_SIZE:
            raise ValueError(f"image_size must be a positive multiple of {PATCH_SIZE}, got {image_size}")
        if gumbel_temperature <= 0:
            raise ValueError(f"gumbel_temperature must be > 0, got {gumbel_temperature!r}")
        self.image_size = image_size
        self.vocab_size = vocab_size
        self.gumbel_temperature = float(gumbel_temperature)
        self.dvae = DiscreteVAE(vocab_size, dvae_hidden_channels)

    def forward(self, batch: Batch) -> DvaeOutput:
        """Tokenise and reconstruct ``batch["image"]`` (B, 3, H, W) in [0, 1], H = W = ``image_size``."""
        image = batch["image"]
        expected = (self.image_size, self.image_size)
        if image.dim() != 4 or tuple(image.shape[-2:]) != expected:
            raise ValueError(
                f"expected images (B, 3, {self.image_size}, {self.image_size}), got {tuple(image.shape)}"
            )
        logits = self.dvae.encode(image)  # (B, h, w, V)
        if self.training:
            sample = sample_gumbel_tokens(logits, self.gumbel_temperature)
            reconstruction = self.dvae.decode_soft(sample.soft)  # (B, 3, H, W)
            tokens = sample.tokens  # (B, h, w)
        else:
            tokens = logits.argmax(dim=-1)  # (B, h, w)
            reconstruction = self.dvae.decode_tokens(tokens)
        return DvaeOutput(
            slot_attention=None,  # type: ignore[arg-type]  # no slot attention in this model
            reconstruction=reconstruction,
            tokens=tokens.flatten(1),
        )

    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        """SLATE's dVAE loss ``mse``: squared error summed over pixels and channels, averaged over images."""
        if not isinstance(output, DvaeOutput):
            raise TypeError(f"DvaeModel.compute_loss expects a DvaeOutput, got {type(output).__name__}")
        image = batch["image"]
        mse = (output.reconstruction - image).square().sum() / image.shape[0]
        return LossOutput(loss=mse, terms={"mse": mse.detach()})

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group, ``dvae`` (SLATE's name for the tokenizer's group, lr 3e-4 in SLATE)."""
        return {"dvae": [p for p in self.parameters() if p.requires_grad]}

    def hyperparameter_names(self) -> tuple[str, ...]:
        """The Gumbel-softmax temperature (SLATE: cosine 1.0 -> 0.1)."""
        return ("gumbel_temperature",)

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Rows of input | reconstruction (first 8 images): ``{"dvae": (N, 3, H, 2W)}`` in [0, 1]."""
        if not isinstance(output, DvaeOutput):
            raise TypeError(f"DvaeModel.visualise expects a DvaeOutput, got {type(output).__name__}")
        count = min(8, batch["image"].shape[0])
        reconstruction = output.reconstruction[:count].clamp(0.0, 1.0)
        return {"dvae": torch.cat([batch["image"][:count], reconstruction], dim=3)}


def build_dvae(config: DvaeConfig) -> DvaeModel:
    """Build a :class:`DvaeModel` from its config."""
    config.validate()
    return DvaeModel(
        config.image_size,
        vocab_size=config.vocab_size,
        dvae_hidden_channels=config.dvae_hidden_channels,
        gumbel_temperature=config.gumbel_temperature,
    )


def resolve_dvae_checkpoint(path: str | Path) -> Path:
    """The checkpoint file of ``path``: ``path/checkpoints/last.pt`` for a run folder, else ``path`` itself.

    Raises:
        ValueError: neither a run folder with a checkpoint nor a file.
    """
    path = Path(path)
    if path.is_dir():
        checkpoint = path / CHECKPOINT_IN_RUN
        if not checkpoint.is_file():
            raise ValueError(f"model.dvae_init: run folder {str(path)!r} has no {CHECKPOINT_IN_RUN}")
        return checkpoint
    if not path.is_file():
        raise ValueError(f"model.dvae_init: {str(path)!r} is neither a run folder nor a checkpoint file")
    return path


def load_dvae_weights(dvae: DiscreteVAE, path: str | Path, image_size: int) -> Path:
    """Copy the dVAE weights of a ``dvae`` or ``slate`` run into ``dvae`` (weights-only loading).

    The checkpoint must record its config (``implicit-slots train`` writes it): its ``model.image_size``
    must equal ``image_size`` and its vocabulary (the rows of the token-logit layer) ``dvae.vocab_size``;
    otherwise one error names both values and the file.

    Args:
        dvae: the dVAE to fill (e.g. ``Slate.dvae``).
        path: a run folder (its ``checkpoints/last.pt`` is read) or a checkpoint file.
        image_size: the image size of the model that receives the weights.

    Returns:
        The checkpoint file read.

    Raises:
        ValueError: no such run / file, not a checkpoint of a dvae or slate run, or a size or vocabulary
            mismatch.
    """
    checkpoint_path = resolve_dvae_checkpoint(path)
    where = f"model.dvae_init {str(checkpoint_path)!r}"
    try:
        checkpoint: Any = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types on damaged or foreign files
        raise ValueError(f"{where}: not a readable weights-only checkpoint ({error})") from error
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ValueError(f"{where}: not a training checkpoint (no 'model' state dict)")
    model_config = (checkpoint.get("config") or {}).get("model") or {}
    name = model_config.get("name")
    if name not in ("dvae", "slate"):
        raise ValueError(f"{where}: a checkpoint of model {name!r}; expected a 'dvae' or 'slate' run")
    saved_size = model_config.get("image_size")
    state = {
        key[len(DVAE_PREFIX) :]: value
        for key, value in checkpoint["model"].items()
        if key.startswith(DVAE_PREFIX)
    }
    logits_weight = state.get("token_logits.weight")
    if logits_weight is None:
        raise ValueError(f"{where}: the checkpoint holds no dVAE weights ({DVAE_PREFIX}* entries)")
    saved_vocab = int(logits_weight.shape[0])
    if saved_size != image_size or saved_vocab != dvae.vocab_size:
        raise ValueError(
            f"{where}: the dVAE was trained with image_size={saved_size}, vocab_size={saved_vocab}, but this "
            f"model has image_size={image_size}, vocab_size={dvae.vocab_size}"
        )
    try:
        dvae.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{where}: the dVAE weights do not fit this model ({error})") from error
    return checkpoint_path
