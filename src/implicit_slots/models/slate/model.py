"""SLATE (Singh et al. 2022) with a pluggable slot-attention module (vanilla or implicit, paper Table 2).

Pipeline (SLATE ``slate.py``; details in ``docs/slate.md``)::

    image -> dVAE encoder -> token logits (B, h, w, V) -> one Gumbel draw -> soft sample -> dVAE decoder
                                                                          -> hard tokens (B, T), T = h * w
    [BOS, tokens] -> embedding + learned position -> LN + MLP -> slot attention -> slots (B, K, S)
    [BOS, tokens[:-1]] (teacher forcing) -> Image-GPT decoder (cross-attends to projected slots)
                                         -> logits (B, T, V)
    loss = MSE (summed per image) + cross-entropy (summed over tokens per image), both averaged over images

The transformer sees the dVAE only through integer token indices, so the cross-entropy never reaches the dVAE
and the dVAE is trained by its MSE alone ("gradients blocked between the dVAE and the rest").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from implicit_slots.models.base import Batch, LossOutput, ModelOutput, ObjectCentricModel
from implicit_slots.models.slate.dvae import PATCH_SIZE, DiscreteVAE, sample_gumbel_tokens
from implicit_slots.models.slate.transformer import TransformerDecoder, dropout
from implicit_slots.slot_attention import SlotAttention, SlotAttentionOutput

BOS_INDEX = 0  # the begin-of-sequence token; image token v is embedded at index v + 1


@dataclass
class SlateOutput(ModelOutput):
    """What :meth:`Slate.forward` returns.

    Attributes:
        slot_attention: the slot-attention output; ``attention`` is (B, T, K) over the token grid.
        dvae_reconstruction: the dVAE's reconstruction (B, 3, H, W), unclamped (relaxed sample when training,
            the argmax tokens in eval mode).
        logits: the decoder's next-token logits (B, T, V) under teacher forcing.
        tokens: the dVAE tokens the decoder predicts (B, T) long (sampled when training, argmax in eval and
            whenever the dVAE is frozen).
    """

    dvae_reconstruction: Tensor
    logits: Tensor
    tokens: Tensor


@dataclass
class AutoregressiveReconstruction:
    """An image re-generated token by token from its slots.

    Attributes:
        image: the dVAE decoding of the generated tokens, clamped to [0, 1], (B, 3, H, W).
        tokens: the generated tokens (B, T) long.
        input_tokens: the argmax dVAE tokens of the input image (B, T) long (what the slots encode).
        slot_attention: the slot-attention output the generation was conditioned on.
    """

    image: Tensor
    tokens: Tensor
    input_tokens: Tensor
    slot_attention: SlotAttentionOutput


def sinusoidal_2d_positions(grid_size: int, dim: int) -> Tensor:
    """2D Fourier features of a raster-ordered square token grid -> (grid_size ** 2, dim).

    A quarter of the channels each hold sin(w y), cos(w y), sin(w x), cos(w x) of the row y and column x, with
    ``dim / 4`` angular frequencies w spaced geometrically from pi / grid_size (half a period across the
    grid) to pi / 2 (a period of four tokens), scaled by sqrt(2) to unit variance like SLATE's N(0, 1) init.
    Neighbouring tokens get similar vectors, so attention can use distances from the first step.

    Args:
        grid_size: tokens per side.
        dim: embedding width, a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"sinusoidal_2d positions need d_model divisible by 4, got {dim}")
    count = dim // 4
    frequencies = torch.logspace(
        math.log10(math.pi / grid_size), math.log10(math.pi / 2), count, dtype=torch.float64
    )  # (count,)
    coordinates = torch.arange(grid_size, dtype=torch.float64)
    rows, columns = torch.meshgrid(coordinates, coordinates, indexing="ij")  # (G, G) each
    rows, columns = rows.reshape(-1, 1) * frequencies, columns.reshape(-1, 1) * frequencies  # (T, count)
    features = torch.cat([rows.sin(), rows.cos(), columns.sin(), columns.cos()], dim=1)  # (T, dim)
    return (features * math.sqrt(2.0)).float()


class Slate(ObjectCentricModel):
    """SLATE: dVAE tokens -> slot attention -> Image-GPT decoder of the tokens.

    Example:
        >>> sa = SlotAttention(32, num_slots=3, slot_dim=32, mlp_hidden_dim=32, num_iterations=2)
        >>> model = Slate(image_size=16, slot_attention=sa, vocab_size=16, d_model=32, num_heads=2,
        ...               num_decoder_blocks=1, dvae_hidden_channels=8)
        >>> out = model({"image": torch.rand(2, 3, 16, 16)})
        >>> out.logits.shape  # (B, T, V) with T = (16 / 4) ** 2
        torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        image_size: int,
        slot_attention: SlotAttention,
        *,
        vocab_size: int = 1024,
        d_model: int = 192,
        num_heads: int = 4,
        num_decoder_blocks: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        dvae_hidden_channels: int = 64,
        gumbel_temperature: float = 1.0,
        position_init: str = "trunc_normal",
    ):
        """Create the model.

        Args:
            image_size: side of the square input images (a multiple of 4); fixes the number of tokens.
            slot_attention: the slot-attention module; its ``input_dim`` must equal ``d_model``.
            vocab_size: dVAE vocabulary size V.
            d_model: width of token embeddings and of the decoder.
            num_heads: decoder attention heads.
            num_decoder_blocks: decoder blocks.
            dropout: dropout on the embeddings, attention outputs and FFN outputs (SLATE: 0.1).
            attention_dropout: dropout on attention weights (SLATE: 0.1). Any value > 0 makes PyTorch fall
                back from the fused attention kernel to the unfused one (about 3x slower attention on CPU).
            dvae_hidden_channels: width of the dVAE's convolutions (SLATE: 64).
            gumbel_temperature: initial Gumbel-softmax temperature (scheduled by the engine).
            position_init: initial values of the learned position embedding: ``"trunc_normal"`` (SLATE:
                independent N(0, 1) per position, so the grid's 2D layout must be learned) or
                ``"sinusoidal_2d"`` (2D Fourier features of each token's row and column, see
                :func:`sinusoidal_2d_positions`; still learned afterwards).
        """
        super().__init__()
        if image_size % PATCH_SIZE:
            raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
        if slot_attention.input_dim != d_model:
            raise ValueError(
                f"slot_attention.input_dim={slot_attention.input_dim} must equal d_model={d_model}"
            )
        self.image_size = image_size
        self.grid_size = image_size // PATCH_SIZE
        self.num_tokens = self.grid_size**2
        self.vocab_size = vocab_size
        self.dropout = dropout
        self.gumbel_temperature = float(gumbel_temperature)

        self.dvae = DiscreteVAE(vocab_size, dvae_hidden_channels)
        # SLATE's one-hot dictionary over V + 1 symbols (BOS first) is an embedding lookup of the indices.
        self.token_embedding = nn.Embedding(vocab_size + 1, d_model)
        self.position_embedding = nn.Parameter(torch.empty(1, self.num_tokens + 1, d_model))
        if position_init == "trunc_normal":
            nn.init.trunc_normal_(self.position_embedding)
        elif position_init == "sinusoidal_2d":
            with torch.no_grad():
                nn.init.trunc_normal_(self.position_embedding[:, :1])  # BOS
                self.position_embedding[0, 1:] = sinusoidal_2d_positions(self.grid_size, d_model)
        else:
            raise ValueError(
                f"position_init must be 'trunc_normal' or 'sinusoidal_2d', got {position_init!r}"
            )
        # SLATE's slot-attention encoder: LayerNorm + MLP on the token embeddings, then slot attention.
        self.input_norm = nn.LayerNorm(d_model)
        mlp_hidden, mlp_out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        nn.init.kaiming_uniform_(mlp_hidden.weight, nonlinearity="relu")
        nn.init.xavier_uniform_(mlp_out.weight)
        nn.init.zeros_(mlp_hidden.bias)
        nn.init.zeros_(mlp_out.bias)
        self.input_mlp = nn.Sequential(mlp_hidden, nn.ReLU(), mlp_out)
        self.slot_attention = slot_attention
        self.slot_projection = nn.Linear(slot_attention.slot_dim, d_model, bias=False)
        nn.init.xavier_uniform_(self.slot_projection.weight)
        self.decoder = TransformerDecoder(d_model, num_heads, num_decoder_blocks, dropout, attention_dropout)
        self.token_head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.xavier_uniform_(self.token_head.weight)

    # ----------------------------------------------------------------------------------------------
    # Training-time forward pass and loss

    def forward(self, batch: Batch) -> SlateOutput:
        """Tokenise, encode slots and predict every token from its prefix and the slots.

        Args:
            batch: ``batch["image"]`` float (B, 3, H, W) in [0, 1], H = W = ``image_size``.

        Returns:
            The dVAE reconstruction, the decoder's logits, the target tokens and the slot-attention output.
        """
        image = batch["image"]
        self._check_image(image)
        dvae_logits = self.dvae.encode(image)  # (B, h, w, V)
        # A frozen (pre-trained) dVAE is a fixed tokenizer: its argmax tokens in training as in evaluation,
        # so every run built on it reads exactly the same tokens of an image (no Gumbel noise).
        if self.training and not self.dvae_frozen:
            sample = sample_gumbel_tokens(dvae_logits, self.gumbel_temperature)
            reconstruction = self.dvae.decode_soft(sample.soft)  # (B, 3, H, W)
            tokens = sample.tokens.flatten(1)  # (B, T)
        else:
            token_grid = dvae_logits.argmax(dim=-1)  # (B, h, w)
            reconstruction = self.dvae.decode_tokens(token_grid)
            tokens = token_grid.flatten(1)  # (B, T)
        embedded = self.embed_tokens(tokens)  # (B, T + 1, D)
        slot_output = self.encode_slots(embedded[:, 1:])
        logits = self._teacher_forced_logits(embedded, slot_output.slots)  # (B, T, V)
        return SlateOutput(
            slot_attention=slot_output, dvae_reconstruction=reconstruction, logits=logits, tokens=tokens
        )

    def compute_loss(self, output: ModelOutput, batch: Batch) -> LossOutput:
        """SLATE's loss: dVAE MSE summed per image + cross-entropy summed over tokens, both averaged over B.

        Args:
            output: the :class:`SlateOutput` of ``batch``.
            batch: ``batch["image"]`` (B, 3, H, W) in [0, 1].

        Returns:
            ``loss = mse + cross_entropy`` (``cross_entropy`` alone when the dVAE is frozen) and both terms.
        """
        if not isinstance(output, SlateOutput):
            raise TypeError(f"Slate.compute_loss expects a SlateOutput, got {type(output).__name__}")
        image = batch["image"]
        batch_size = image.shape[0]
        mse = (output.dvae_reconstruction - image).square().sum() / batch_size
        cross_entropy = (
            F.cross_entropy(output.logits.flatten(0, 1), output.tokens.flatten(), reduction="sum")
            / batch_size
        )
        # A frozen dVAE is not trained: its MSE is logged but takes no part in the loss.
        loss = cross_entropy if self.dvae_frozen else mse + cross_entropy
        return LossOutput(loss=loss, terms={"mse": mse.detach(), "cross_entropy": cross_entropy.detach()})

    dvae_frozen: bool = False
    """Set by :meth:`freeze_dvae`: the dVAE is a fixed, pre-trained tokenizer."""

    def freeze_dvae(self) -> None:
        """Freeze the dVAE (two-stage SLATE): its parameters get no gradient and no update (the ``dvae``
        group is empty), its tokens are its argmax tokens and its MSE leaves the loss."""
        for parameter in self.dvae.parameters():
            parameter.requires_grad_(False)
        self.dvae_frozen = True

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``dvae`` (the tokenizer, SLATE lr 3e-4; empty when frozen) and ``main`` (the rest, SLATE lr 1e-4
        with warm-up)."""
        dvae = [p for p in self.dvae.parameters() if p.requires_grad]
        dvae_ids = {id(p) for p in dvae}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in dvae_ids]
        return {"dvae": dvae, "main": main}

    def hyperparameter_names(self) -> tuple[str, ...]:
        """The Gumbel-softmax temperature (SLATE: cosine 1.0 -> 0.1)."""
        return ("gumbel_temperature",)

    # ----------------------------------------------------------------------------------------------
    # Building blocks

    def _check_image(self, image: Tensor) -> None:
        expected = (self.image_size, self.image_size)
        if image.dim() != 4 or tuple(image.shape[-2:]) != expected:
            raise ValueError(
                f"expected images (B, 3, {self.image_size}, {self.image_size}), got {tuple(image.shape)}"
            )

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Embed ``[BOS, tokens]`` with learned positions and dropout.

        Args:
            tokens: image tokens (B, t) long, t <= T.

        Returns:
            (B, t + 1, D): position 0 is BOS.
        """
        bos = tokens.new_full((tokens.shape[0], 1), BOS_INDEX)
        indices = torch.cat([bos, tokens + 1], dim=1)  # (B, t + 1)
        embedded = self.token_embedding(indices) + self.position_embedding[:, : indices.shape[1]]
        return dropout(embedded, self.dropout, self.training)

    def encode_slots(
        self, token_embeddings: Tensor, generator: torch.Generator | None = None
    ) -> SlotAttentionOutput:
        """SLATE's slot encoder: LayerNorm + MLP on the token embeddings (B, T, D), then slot attention.

        Args:
            token_embeddings: (B, T, D) embedded tokens (without BOS).
            generator: random generator of the initial slots (default: the global one).
        """
        features = self.input_mlp(self.input_norm(token_embeddings))  # (B, T, D)
        return self.slot_attention(features, generator=generator)

    def _teacher_forced_logits(self, embedded: Tensor, slots: Tensor) -> Tensor:
        """Next-token logits (B, T, V) from embedded ``[BOS, tokens]`` (B, T + 1, D) and slots (B, K, S)."""
        memory = self.slot_projection(slots)  # (B, K, D)
        hidden = self.decoder(embedded[:, :-1], memory)  # (B, T, D)
        return self.token_head(hidden)

    def token_logits(self, tokens: Tensor, slots: Tensor) -> Tensor:
        """Teacher-forced next-token logits of ``tokens`` (B, T) given any slots (B, K, S) -> (B, T, V).

        With the slots of the same images this is ``forward(batch).logits``; with other slots (for example
        another image's) it measures how much the decoder relies on them.
        """
        return self._teacher_forced_logits(self.embed_tokens(tokens), slots)

    def encode_image_tokens(self, image: Tensor) -> Tensor:
        """The argmax dVAE tokens of an image (B, 3, H, W) -> (B, T) long."""
        self._check_image(image)
        return self.dvae.encode(image).argmax(dim=-1).flatten(1)

    def decode_image_tokens(self, tokens: Tensor) -> Tensor:
        """Render tokens (B, T) with the dVAE decoder -> (B, 3, H, W), clamped to [0, 1]."""
        grid = tokens.view(tokens.shape[0], self.grid_size, self.grid_size)
        return self.dvae.decode_tokens(grid).clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------------------------
    # Autoregressive generation through the slots

    def _next_token(
        self, logits: Tensor, sample: bool, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Pick the next token from logits (B, V): argmax, or a draw from softmax(logits / temperature)."""
        if not sample:
            return logits.argmax(dim=-1)  # (B,)
        probabilities = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)  # (B,)

    @torch.no_grad()
    def generate_tokens(
        self,
        slots: Tensor,
        *,
        use_cache: bool = True,
        sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        num_tokens: int | None = None,
    ) -> Tensor:
        """Generate image tokens one by one from the slots (call in eval mode: dropout would apply).

        With ``use_cache`` every step feeds only the newest token through the decoder and attends to cached
        keys/values (O(T) work per step). Without it, every step re-runs the whole decoder on the prefix, as
        official SLATE does (O(T^2) work per step); both give the same tokens.

        Args:
            slots: (B, K, S) slots.
            use_cache: decode with the key/value cache.
            sample: draw tokens from the predicted distribution instead of taking the argmax.
            temperature: softmax temperature of the sampling.
            generator: random generator for sampling.
            num_tokens: generate only this many tokens (default: the whole grid, T).

        Returns:
            (B, num_tokens) long.
        """
        if self.training:
            raise RuntimeError(
                "generate_tokens runs in eval mode only (dropout would apply); call model.eval()"
            )
        length = self.num_tokens if num_tokens is None else num_tokens
        if not 0 < length <= self.num_tokens:
            raise ValueError(f"num_tokens must be in [1, {self.num_tokens}], got {length}")
        memory = self.slot_projection(slots)  # (B, K, D)
        batch = slots.shape[0]
        tokens = torch.empty(batch, 0, dtype=torch.long, device=slots.device)
        if use_cache:
            cache = self.decoder.start_cache(memory, length)
            current = self.embed_tokens(tokens)  # (B, 1, D): BOS at position 0
            generated = []
            for position in range(length):
                hidden = self.decoder.step(current, cache)  # (B, 1, D)
                token = self._next_token(
                    self.token_head(hidden[:, 0]), sample, temperature, generator
                )  # (B,)
                generated.append(token)
                index = (token + 1).unsqueeze(1)  # (B, 1)
                current = (
                    self.token_embedding(index) + self.position_embedding[:, position + 1 : position + 2]
                )
            return torch.stack(generated, dim=1)
        for _ in range(length):
            hidden = self.decoder(self.embed_tokens(tokens), memory)  # (B, t + 1, D)
            token = self._next_token(self.token_head(hidden[:, -1]), sample, temperature, generator)
            tokens = torch.cat([tokens, token.unsqueeze(1)], dim=1)
        return tokens

    @torch.no_grad()
    def reconstruct_autoregressive(
        self,
        image: Tensor,
        *,
        use_cache: bool = True,
        sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> AutoregressiveReconstruction:
        """Reconstruct images through the slot bottleneck (the paper's Table-3 images; call in eval mode).

        argmax dVAE tokens -> slots -> tokens generated one by one -> dVAE decoder -> clamp to [0, 1].

        Args:
            image: (B, 3, H, W) in [0, 1].
            use_cache: decode with the key/value cache (same tokens, much faster).
            sample: sample tokens instead of the greedy argmax.
            temperature: sampling temperature.
            generator: random generator for the initial slots and for sampling.

        Returns:
            The reconstruction, the generated and the input tokens and the slot-attention output.
        """
        if self.training:
            raise RuntimeError("reconstruct_autoregressive runs in eval mode only; call model.eval()")
        input_tokens = self.encode_image_tokens(image)  # (B, T)
        slot_output = self.encode_slots(self.embed_tokens(input_tokens)[:, 1:], generator)
        tokens = self.generate_tokens(
            slot_output.slots,
            use_cache=use_cache,
            sample=sample,
            temperature=temperature,
            generator=generator,
        )
        return AutoregressiveReconstruction(
            image=self.decode_image_tokens(tokens),
            tokens=tokens,
            input_tokens=input_tokens,
            slot_attention=slot_output,
        )

    # ----------------------------------------------------------------------------------------------
    # Visualisation

    def attention_masks(self, attention: Tensor) -> Tensor:
        """Per-slot attention over the token grid, upsampled to pixels.

        Args:
            attention: (B, T, K) attention of the slots over the tokens.

        Returns:
            (B, K, H, W) in [0, 1], each token's weight repeated over its 4x4 patch.
        """
        batch, _, num_slots = attention.shape
        grid = attention.transpose(1, 2).reshape(batch, num_slots, self.grid_size, self.grid_size)
        return grid.repeat_interleave(PATCH_SIZE, dim=2).repeat_interleave(PATCH_SIZE, dim=3)

    @torch.no_grad()
    def visualise(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Rows of input | dVAE reconstruction | one attention overlay per slot (first 8 images).

        Returns:
            ``{"slate": (N, 3, H, W * (2 + K))}`` in [0, 1].
        """
        if not isinstance(output, SlateOutput):
            raise TypeError(f"Slate.visualise expects a SlateOutput, got {type(output).__name__}")
        count = min(8, batch["image"].shape[0])
        image = batch["image"][:count]
        reconstruction = output.dvae_reconstruction[:count].clamp(0.0, 1.0)
        overlays = attention_overlays(image, self.attention_masks(output.slot_attention.attention[:count]))
        row = torch.cat([image, reconstruction, *overlays.unbind(dim=1)], dim=3)  # (N, 3, H, W * (2 + K))
        return {"slate": row}


def attention_overlays(image: Tensor, masks: Tensor) -> Tensor:
    """Show each slot's mask on the image: ``image * mask + (1 - mask)`` (white where not attended).

    Args:
        image: (B, 3, H, W) in [0, 1].
        masks: (B, K, H, W) in [0, 1].

    Returns:
        (B, K, 3, H, W).
    """
    masks = masks.unsqueeze(2)  # (B, K, 1, H, W)
    return image.unsqueeze(1) * masks + (1.0 - masks)
