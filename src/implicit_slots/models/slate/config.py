"""The ``model:`` section of a SLATE config file and the one function that turns it into a model."""

from __future__ import annotations

from dataclasses import dataclass, field

from implicit_slots.models.slate.dvae_model import load_dvae_weights
from implicit_slots.models.slate.model import Slate
from implicit_slots.slot_attention import SlotAttentionConfig, build_slot_attention, check_positive_integers


def _slate_slot_attention() -> SlotAttentionConfig:
    """SLATE's slot attention (``train.py`` defaults: 3 slots of size 192, MLP 192, one head) with the
    paper's 7 iterations and the implicit (IN) variant."""
    return SlotAttentionConfig(
        num_slots=3, slot_dim=192, mlp_hidden_dim=192, num_heads=1, num_iterations=7, variant="IN"
    )


@dataclass
class SlateConfig:
    """SLATE hyperparameters; defaults are official SLATE's ``train.py`` with the paper's 7 IN iterations.

    Attributes:
        image_size: side of the square input images (multiple of 4); T = (image_size / 4) ** 2 tokens.
        vocab_size: dVAE vocabulary size.
        dvae_hidden_channels: width of the dVAE convolutions.
        d_model: token-embedding and decoder width.
        num_heads: decoder attention heads.
        num_decoder_blocks: decoder blocks.
        dropout: dropout on embeddings, attention outputs and FFN outputs.
        attention_dropout: dropout on attention weights (0 keeps the fused attention kernel; docs/slate.md).
        gumbel_temperature: initial Gumbel-softmax temperature (the engine anneals it).
        position_init: ``trunc_normal`` (SLATE) or ``sinusoidal_2d`` (2D Fourier features as the initial
            value of the learned position embedding; learns the grid layout faster, see docs/slate.md).
        slot_attention: the slot-attention module (variant, iterations, slots, sizes, solver options).
        dvae_init: start the dVAE from the weights of a run folder or checkpoint of a ``dvae`` or ``slate``
            run (two-stage SLATE); its image size and vocabulary must match. Null: a fresh dVAE.
        freeze_dvae: keep the dVAE fixed (no gradient, no update, its MSE out of the loss, argmax tokens in
            training too); meant with ``dvae_init``. False: the dVAE trains with the rest (official SLATE).
    """

    image_size: int = 64
    vocab_size: int = 1024
    dvae_hidden_channels: int = 64
    d_model: int = 192
    num_heads: int = 4
    num_decoder_blocks: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.1
    gumbel_temperature: float = 1.0
    position_init: str = "trunc_normal"
    slot_attention: SlotAttentionConfig = field(default_factory=_slate_slot_attention)
    dvae_init: str | None = None
    freeze_dvae: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``model.`` key of a value out of range (``load_config`` calls
        this; :func:`build_slate` does not check again)."""
        check_positive_integers(
            self,
            (
                "image_size",
                "vocab_size",
                "dvae_hidden_channels",
                "d_model",
                "num_heads",
                "num_decoder_blocks",
            ),
        )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {value!r}")
        if self.gumbel_temperature <= 0:
            raise ValueError(f"model.gumbel_temperature must be > 0, got {self.gumbel_temperature!r}")
        if self.freeze_dvae and self.dvae_init is None:
            raise ValueError(
                "model.freeze_dvae needs model.dvae_init (a frozen fresh dVAE tokenises at random)"
            )
        self.slot_attention.validate("model.slot_attention")


def build_slate(config: SlateConfig) -> Slate:
    """Build a :class:`Slate` model from its (validated, see :meth:`SlateConfig.validate`) config."""
    model = Slate(
        image_size=config.image_size,
        slot_attention=build_slot_attention(config.d_model, config.slot_attention),
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_decoder_blocks=config.num_decoder_blocks,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        dvae_hidden_channels=config.dvae_hidden_channels,
        gumbel_temperature=config.gumbel_temperature,
        position_init=config.position_init,
    )
    if config.dvae_init is not None:
        load_dvae_weights(model.dvae, config.dvae_init, config.image_size)
    if config.freeze_dvae:
        model.freeze_dvae()
    return model
