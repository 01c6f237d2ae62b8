"""The slot-attention update cell: one step ``slots -> slots`` given precomputed keys and values.

Faithful to SLATE's / Locatello et al.'s cell (reference/anchors.md b2, b7):
queries from LayerNorm(slots); logits k·q with keys pre-scaled by (slot_dim / heads)^-1/2; softmax over
slots (jointly over heads × slots, as SLATE); + epsilon; renormalise over inputs (weighted mean);
GRUCell; residual MLP on LayerNorm(slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class CellOutput:
    """One update step's result.

    Attributes:
        slots: (B, K, D) updated slots.
        attention: (B, N, K) attention of each input over the slots (sums to 1 over K; summed over
            heads), before the renormalisation over inputs.
    """

    slots: Tensor
    attention: Tensor


def xavier_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A linear layer with SLATE's initialisation (Xavier-uniform weight, zero bias)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class SlotAttentionCell(nn.Module):
    """The update map f(slots; keys, values) whose fixed point implicit slot attention finds.

    Args:
        slot_dim: D, the slot size.
        mlp_hidden_dim: hidden size of the residual MLP.
        num_heads: attention heads (SLATE's ``num_slot_heads``); ``slot_dim`` must divide evenly.
        epsilon: added to the attention before the renormalisation over inputs.
    """

    def __init__(self, slot_dim: int, mlp_hidden_dim: int, num_heads: int = 1, epsilon: float = 1e-8) -> None:
        super().__init__()
        if slot_dim % num_heads:
            raise ValueError(f"slot_dim={slot_dim} is not divisible by num_heads={num_heads}")
        self.slot_dim = slot_dim
        self.num_heads = num_heads
        self.epsilon = epsilon
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.project_q = xavier_linear(slot_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        nn.init.xavier_uniform_(self.gru.weight_ih)
        nn.init.orthogonal_(self.gru.weight_hh)
        nn.init.zeros_(self.gru.bias_ih)
        nn.init.zeros_(self.gru.bias_hh)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        first = nn.Linear(slot_dim, mlp_hidden_dim)
        nn.init.kaiming_uniform_(first.weight, nonlinearity="relu")
        nn.init.zeros_(first.bias)
        self.mlp = nn.Sequential(first, nn.ReLU(), xavier_linear(mlp_hidden_dim, slot_dim))

    def forward(self, slots: Tensor, keys: Tensor, values: Tensor) -> CellOutput:
        """Apply one update.

        Args:
            slots: (B, K, D).
            keys: (B, H, N, D/H), already scaled by (D/H)^-1/2.
            values: (B, H, N, D/H).
        """
        batch, num_slots, slot_dim = slots.shape
        heads = self.num_heads
        queries = self.project_q(self.norm_slots(slots))  # (B, K, D)
        queries = queries.view(batch, num_slots, heads, slot_dim // heads).transpose(1, 2)  # (B, H, K, D/H)
        logits = torch.matmul(keys, queries.transpose(-1, -2))  # (B, H, N, K)
        num_inputs = logits.shape[2]
        # Softmax over slots (jointly with heads, as SLATE): slots compete for each input.
        logits = logits.transpose(1, 2).reshape(batch, num_inputs, heads * num_slots)  # (B, N, H*K)
        # Softmax in at least fp32 (under bf16 autocast the logits arrive in bf16).
        attention = F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        attention = attention.to(values.dtype)
        attention = attention.view(batch, num_inputs, heads, num_slots).transpose(1, 2)  # (B, H, N, K)
        weights = attention + self.epsilon
        weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
        updates = torch.matmul(weights.transpose(-1, -2), values)  # (B, H, K, D/H)
        updates = updates.transpose(1, 2).reshape(batch * num_slots, slot_dim)  # (B*K, D)
        new_slots = self.gru(updates, slots.reshape(batch * num_slots, slot_dim))
        new_slots = new_slots.view(batch, num_slots, slot_dim)
        new_slots = new_slots + self.mlp(self.norm_mlp(new_slots))
        return CellOutput(slots=new_slots, attention=attention.sum(dim=1))  # attention (B, N, K)
