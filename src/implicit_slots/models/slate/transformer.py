"""SLATE's Image-GPT decoder: pre-LayerNorm transformer blocks with causal self-attention over the token
prefix and cross-attention to the (projected) slots, plus a key/value cache for autoregressive decoding.

Numerics follow SLATE's ``transformer.py`` (Singh et al. 2022): separate q/k/v projections without bias
(Xavier-uniform; here stored fused, initialised per part so the maths is unchanged), output projections
and the second FFN layer scaled by ``(3 * num_blocks) ** -0.5``, a 4x ReLU FFN, dropout on attention
weights, attention outputs and the FFN output, a final LayerNorm. SLATE's first block normalises its input
and uses the *normalised* input as its residual base; that quirk is kept. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CAUSAL_CHUNK_SIZE = 64  # query rows per chunk for causal attention with dropout on the CPU (unfused kernel)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout`` with a cheaper mask on the CPU: the same law (keep with probability ``1 - p``, scale the
    kept values by ``1 / (1 - p)``), drawn from the same global generator.

    PyTorch's CPU dropout draws its mask with ``bernoulli_`` at about 7 ns per element on one thread (a
    tenth of an official-size SLATE step); a float32 uniform compared with ``p`` costs about half of that.
    The mask is drawn in float32 whatever the input's dtype (a bf16 uniform has 256 values).
    Off the CPU this is ``F.dropout`` (fused on CUDA).

    Args:
        x: input of any shape.
        p: probability of zeroing an element, in [0, 1).
        training: apply dropout (False: return ``x`` unchanged).

    Returns:
        A tensor of ``x``'s shape and dtype.
    """
    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    keep = torch.rand(x.shape, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))  # 0 or 1 / (1 - p)
    return (x * keep).to(x.dtype)


def causal_attention(query: Tensor, key: Tensor, value: Tensor, dropout_p: float) -> Tensor:
    """Causal multi-head attention with optional dropout on the attention weights.

    Without dropout, and on any device other than the CPU, this is one fused
    ``scaled_dot_product_attention(is_causal=True)`` call (CUDA's flash and memory-efficient kernels apply
    dropout themselves). With dropout on the CPU, PyTorch falls back to the unfused kernel, which
    materialises the full (T, T) weights although half of them are masked; there the queries are split into
    chunks of ``CAUSAL_CHUNK_SIZE`` rows, each chunk attends only to the keys it may see (an explicit causal
    mask inside the chunk), and the weights are dropped with :func:`dropout`'s cheaper mask. The result has
    the same distribution (dropout of a masked weight is a no-op) at about half the unfused kernel's cost
    (docs/slate.md, "Dropout cost").

    Args:
        query, key, value: (B, H, T, D_h).
        dropout_p: dropout probability on the attention weights (0 in eval mode).

    Returns:
        (B, H, T, D_h).
    """
    if dropout_p == 0.0 or query.device.type != "cpu" or query.shape[2] <= CAUSAL_CHUNK_SIZE:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=True)
    return _chunked_causal_attention(query, key, value, dropout_p, CAUSAL_CHUNK_SIZE)


def _chunked_causal_attention(
    query: Tensor, key: Tensor, value: Tensor, dropout_p: float, chunk_size: int
) -> Tensor:
    """Causal attention computed ``chunk_size`` query rows at a time, each over the keys it may see."""
    length = query.shape[2]
    query = query * query.shape[-1] ** -0.5  # scaled_dot_product_attention's default scale
    chunks = []
    for start in range(0, length, chunk_size):
        end = min(start + chunk_size, length)
        # Query start + r sees keys [0, start + r]: keep column j when j <= r + start.
        hidden = torch.ones(end - start, end, dtype=torch.bool, device=query.device).triu(start + 1)
        scores = query[:, :, start:end] @ key[:, :, :end].transpose(-1, -2)  # (B, H, c, end)
        weights = scores.masked_fill(hidden, float("-inf")).softmax(dim=-1)
        chunks.append(dropout(weights, dropout_p, True) @ value[:, :, :end])  # (B, H, c, D_h)
    return torch.cat(chunks, dim=2)


def _xavier_linear(
    in_features: int, out_features: int, bias: bool, gain: float = 1.0, parts: int = 1
) -> nn.Linear:
    """A linear layer whose weight is ``parts`` stacked Xavier-uniform (in -> out/parts) blocks, zero bias.

    Stacking ``parts`` independently initialised projections into one layer computes the same function as
    the separate layers (one matrix product instead of ``parts``).
    """
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        for block in layer.weight.chunk(parts, dim=0):
            nn.init.xavier_uniform_(block, gain=gain)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


def _kaiming_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer with Kaiming-uniform (ReLU) weight and zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


@dataclass
class BlockCache:
    """Keys and values one decoder block keeps during autoregressive decoding.

    Attributes:
        self_keys: (B, H, T_max, D_h); positions ``[0, length)`` are filled.
        self_values: (B, H, T_max, D_h).
        cross_keys: keys of the slots, (B, H, K, D_h), computed once.
        cross_values: (B, H, K, D_h).
    """

    self_keys: Tensor
    self_values: Tensor
    cross_keys: Tensor
    cross_values: Tensor


@dataclass
class DecoderCache:
    """The key/value cache of a whole decoder.

    Attributes:
        blocks: one :class:`BlockCache` per block.
        length: number of positions already decoded (and cached).
    """

    blocks: list[BlockCache]
    length: int = 0


class DecoderBlock(nn.Module):
    """One pre-LN block: causal self-attention, cross-attention to the slots, FFN."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_blocks: int,
        dropout: float,
        attention_dropout: float,
        is_first: bool,
    ):
        """Create the block.

        Args:
            d_model: model width D.
            num_heads: attention heads H (D divisible by H).
            num_blocks: number of blocks in the decoder (sets the output-projection gain).
            dropout: dropout on attention outputs and the FFN output.
            attention_dropout: dropout on attention weights (0 keeps the fused attention kernel).
            is_first: whether this is the first block (SLATE: residual base is the normalised input).
        """
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        gain = (3 * num_blocks) ** -0.5
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.is_first = is_first
        self.self_norm = nn.LayerNorm(d_model)
        self.self_qkv = _xavier_linear(d_model, 3 * d_model, bias=False, parts=3)
        self.self_out = _xavier_linear(d_model, d_model, bias=False, gain=gain)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_query = _xavier_linear(d_model, d_model, bias=False)
        self.cross_kv = _xavier_linear(d_model, 2 * d_model, bias=False, parts=2)
        self.cross_out = _xavier_linear(d_model, d_model, bias=False, gain=gain)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn_hidden = _kaiming_linear(d_model, 4 * d_model)
        self.ffn_out = _xavier_linear(4 * d_model, d_model, bias=True, gain=gain)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def _merge_heads(self, x: Tensor) -> Tensor:
        """(B, H, T, D/H) -> (B, T, D)."""
        batch, heads, length, head_dim = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * head_dim)

    def _attention(self, query: Tensor, key: Tensor, value: Tensor, causal: bool) -> Tensor:
        """Multi-head attention core on split heads, (B, H, T, D_h) -> (B, T, D)."""
        attention_dropout = self.attention_dropout if self.training else 0.0
        if causal:
            out = causal_attention(query, key, value, attention_dropout)
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=attention_dropout)
        return self._merge_heads(out)  # (B, T, D)

    def slot_keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the projected slots (B, K, D), each (B, H, K, D_h)."""
        keys, values = self.cross_kv(memory).chunk(2, dim=-1)  # (B, K, D) each
        return self._split_heads(keys), self._split_heads(values)

    def _residual_tail(self, x: Tensor, cross_keys: Tensor, cross_values: Tensor) -> Tensor:
        """Cross-attention and FFN sub-layers with their residuals, (B, T, D) -> (B, T, D)."""
        query = self._split_heads(self.cross_query(self.cross_norm(x)))  # (B, H, T, D_h)
        attended = self._attention(query, cross_keys, cross_values, causal=False)  # (B, T, D)
        x = x + dropout(self.cross_out(attended), self.dropout, self.training)
        hidden = F.relu(self.ffn_hidden(self.ffn_norm(x)))  # (B, T, 4D)
        return x + dropout(self.ffn_out(hidden), self.dropout, self.training)

    def _self_attention_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(residual base, normalised input) of the self-attention sub-layer."""
        normalised = self.self_norm(x)
        return (normalised if self.is_first else x), normalised

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """Teacher-forced pass over a whole sequence.

        Args:
            x: decoder input (B, T, D).
            memory: projected slots (B, K, D).

        Returns:
            (B, T, D).
        """
        base, normalised = self._self_attention_input(x)
        query, key, value = (self._split_heads(part) for part in self.self_qkv(normalised).chunk(3, dim=-1))
        attended = self._attention(query, key, value, causal=True)  # (B, T, D)
        x = base + dropout(self.self_out(attended), self.dropout, self.training)
        cross_keys, cross_values = self.slot_keys_values(memory)
        return self._residual_tail(x, cross_keys, cross_values)

    def step(self, x: Tensor, cache: BlockCache, position: int) -> Tensor:
        """Decode one position with the cache (inference; no dropout).

        Args:
            x: input at ``position``, (B, 1, D).
            cache: this block's cache; positions ``[0, position)`` are filled, ``position`` is written here.
            position: index of the position being decoded.

        Returns:
            (B, 1, D).
        """
        base, normalised = self._self_attention_input(x)
        query, key, value = (self._split_heads(part) for part in self.self_qkv(normalised).chunk(3, dim=-1))
        cache.self_keys[:, :, position : position + 1] = key
        cache.self_values[:, :, position : position + 1] = value
        keys = cache.self_keys[:, :, : position + 1]  # (B, H, t+1, D_h): every cached position is visible
        values = cache.self_values[:, :, : position + 1]
        attended = self._attention(query, keys, values, causal=False)  # (B, 1, D)
        x = base + self.self_out(attended)
        return self._residual_tail(x, cache.cross_keys, cache.cross_values)


class TransformerDecoder(nn.Module):
    """A stack of :class:`DecoderBlock` with a final LayerNorm."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_blocks: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
    ):
        """Create the decoder.

        Args:
            d_model: model width D.
            num_heads: attention heads.
            num_blocks: number of blocks.
            dropout: dropout on attention outputs and FFN outputs.
            attention_dropout: dropout on attention weights.
        """
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, num_heads, num_blocks, dropout, attention_dropout, is_first=index == 0)
            for index in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(d_model)

    def _typed_blocks(self) -> list[DecoderBlock]:
        return [cast(DecoderBlock, block) for block in self.blocks]

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """Teacher-forced pass: (B, T, D) with slots (B, K, D) -> (B, T, D)."""
        for block in self.blocks:
            x = block(x, memory)
        return self.final_norm(x)

    def start_cache(self, memory: Tensor, max_length: int) -> DecoderCache:
        """An empty cache for decoding up to ``max_length`` positions against projected slots (B, K, D)."""
        batch = memory.shape[0]
        head_dim = self.d_model // self.num_heads
        shape = (batch, self.num_heads, max_length, head_dim)
        blocks = []
        for block in self._typed_blocks():
            cross_keys, cross_values = block.slot_keys_values(memory)
            blocks.append(
                BlockCache(
                    self_keys=memory.new_empty(shape),
                    self_values=memory.new_empty(shape),
                    cross_keys=cross_keys,
                    cross_values=cross_values,
                )
            )
        return DecoderCache(blocks=blocks)

    def step(self, x: Tensor, cache: DecoderCache) -> Tensor:
        """Decode the next position: input (B, 1, D) -> output (B, 1, D); advances ``cache.length``."""
        position = cache.length
        if position >= cache.blocks[0].self_keys.shape[2]:
            raise ValueError(f"the cache holds {position} positions already, its maximum")
        for block, block_cache in zip(self._typed_blocks(), cache.blocks):
            x = block.step(x, block_cache, position)
        cache.length = position + 1
        return self.final_norm(x)
