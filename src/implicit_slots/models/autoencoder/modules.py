"""Building blocks of Locatello et al.'s slot-attention models: position embedding, CNN encoder,
spatial broadcast decoder. Shared by the autoencoder and set prediction."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def build_grid(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Coordinate features of a grid: ``[y, x, 1 − y, 1 − x]`` with y, x evenly spaced in [0, 1].

    Args:
        height: rows H.
        width: columns W.
        device: where to create the grid.

    Returns:
        (H, W, 4) grid.
    """
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # (H, W, 2)
    return torch.cat([grid, 1.0 - grid], dim=-1)  # (H, W, 4)


class SoftPositionEmbedding(nn.Module):
    """Adds a learned linear map of the coordinate grid to a feature map (Locatello et al. 2020).

    Because the embedding is a linear function of the coordinates, it is defined for any resolution.

    Args:
        channels: feature channels C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.projection = nn.Linear(4, channels)

    def forward(self, features: Tensor) -> Tensor:
        """Add the embedding.

        Args:
            features: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        grid = build_grid(features.shape[2], features.shape[3], features.device)  # (H, W, 4)
        embedding = self.projection(grid).permute(2, 0, 1)  # (C, H, W)
        return features + embedding.unsqueeze(0)


class ConvEncoder(nn.Module):
    """CNN encoder + soft position embedding + LayerNorm + MLP, giving slot-attention inputs.

    Locatello et al.'s object-discovery encoder is four 5x5 convolutions with 64 channels, stride 1
    (``strides=(1, 1, 1, 1)``); the set-prediction encoder uses strides (1, 2, 2, 1).

    Args:
        channels: channels of every convolution (and of the output features).
        kernel_size: odd kernel size of the convolutions ("same" padding).
        strides: stride of each convolution (its length is the number of layers).
        input_channels: image channels.
    """

    def __init__(
        self, channels: int, kernel_size: int, strides: tuple[int, ...], input_channels: int = 3
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvEncoder kernel_size must be odd; got {kernel_size}")
        if not strides or any(stride not in (1, 2) for stride in strides):
            raise ValueError(f"ConvEncoder strides must be a non-empty sequence of 1s and 2s; got {strides}")
        layers: list[nn.Module] = []
        for index, stride in enumerate(strides):
            in_channels = input_channels if index == 0 else channels
            # padding k//2 with stride 2 halves even sizes exactly, as TensorFlow's "SAME" does.
            layers += [
                nn.Conv2d(in_channels, channels, kernel_size, stride, padding=kernel_size // 2),
                nn.ReLU(),
            ]
        self.convs = nn.Sequential(*layers)
        self.position_embedding = SoftPositionEmbedding(channels)
        self.layer_norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))
        self.downsampling = math.prod(strides)

    def forward(self, images: Tensor) -> Tensor:
        """Encode images into a set of feature vectors.

        Args:
            images: (B, C_in, H, W), H and W divisible by the product of the strides.

        Returns:
            (B, N, channels) with N = (H / s) * (W / s).
        """
        features = self.position_embedding(self.convs(images))  # (B, C, h, w)
        features = features.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.mlp(self.layer_norm(features))


class SpatialBroadcastDecoder(nn.Module):
    """Decodes each slot on its own into RGB + an alpha logit (Watters et al. 2019; Locatello et al.).

    Each slot is tiled onto an ``initial_size`` x ``initial_size`` grid and a soft position embedding is
    added; then ``num_upsampling`` transposed convolutions with stride 2 (each doubles the size),
    ``num_hidden_layers`` with stride 1 (all ``kernel_size``, ``channels`` wide, ReLU) and a final 3x3
    one to ``output_channels``. Locatello's CLEVR decoder: initial size 8, four stride-2 layers, one
    stride-1 layer, kernel 5. Their Multi-dSprites / Tetrominoes decoder broadcasts at full
    resolution (no upsampling) and uses stride-1 layers only.

    Args:
        slot_dim: D, the slot size.
        channels: channels of the hidden layers.
        initial_size: side of the broadcast grid.
        num_upsampling: number of stride-2 layers.
        num_hidden_layers: number of stride-1 hidden layers (>= 1).
        kernel_size: odd kernel size of the hidden layers.
        output_channels: channels per slot (RGB + alpha = 4).
    """

    def __init__(
        self,
        slot_dim: int,
        channels: int,
        initial_size: int,
        num_upsampling: int,
        num_hidden_layers: int = 1,
        kernel_size: int = 5,
        output_channels: int = 4,
    ) -> None:
        super().__init__()
        if initial_size < 1 or num_upsampling < 0 or num_hidden_layers < 1 or kernel_size % 2 != 1:
            raise ValueError(
                "SpatialBroadcastDecoder needs initial_size >= 1, num_upsampling >= 0, "
                "num_hidden_layers >= 1 and an odd kernel_size; got "
                f"{initial_size}, {num_upsampling}, {num_hidden_layers}, {kernel_size}"
            )
        self.initial_size = initial_size
        self.position_embedding = SoftPositionEmbedding(slot_dim)
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        in_channels = slot_dim
        for _ in range(num_upsampling):
            layers += [
                nn.ConvTranspose2d(
                    in_channels, channels, kernel_size, stride=2, padding=padding, output_padding=1
                ),
                nn.ReLU(),
            ]
            in_channels = channels
        for _ in range(num_hidden_layers):
            layers += [
                nn.ConvTranspose2d(in_channels, channels, kernel_size, stride=1, padding=padding),
                nn.ReLU(),
            ]
            in_channels = channels
        layers += [nn.ConvTranspose2d(channels, output_channels, 3, stride=1, padding=1)]
        self.convs = nn.Sequential(*layers)
        self.output_size = initial_size * 2**num_upsampling

    def forward(self, slots: Tensor) -> Tensor:
        """Decode every slot.

        Args:
            slots: (B, K, D).

        Returns:
            (B, K, output_channels, S, S) with S = ``output_size``.
        """
        batch_size, num_slots, slot_dim = slots.shape
        size = self.initial_size
        tiled = slots.reshape(batch_size * num_slots, slot_dim, 1, 1).expand(
            -1, -1, size, size
        )  # (BK, D, s, s)
        decoded = self.convs(self.position_embedding(tiled))  # (BK, C_out, S, S)
        return decoded.reshape(batch_size, num_slots, *decoded.shape[1:])
