"""Distances between sets of images: FID with the standard weights, or a clearly named proxy.

``build_image_distance(path)`` gives real FID when the user provides the standard FID Inception
weights file; without it, a small fixed random network gives a *proxy* Fréchet feature distance that
is useful to compare runs of this project against each other but is not FID and is never called so.
Both accumulate the feature mean and covariance of a "real" and a "generated" set and return the
Fréchet distance ``‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})`` (torchmetrics'
``FrechetInceptionDistance`` with a custom feature extractor, float64 statistics).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

from implicit_slots.metrics.inception import load_fid_inception


class ProxyFeatureExtractor(nn.Module):
    """A fixed, seeded random CNN used as a stand-in for Inception when no FID weights are available.

    Architecture: bilinear resize to 64x64, scale to [-1, 1], then three 3x3 stride-2 convolutions
    (3 -> 32 -> 64 -> 128 channels, each followed by ReLU) with weights drawn from a
    ``torch.Generator`` seeded with ``seed`` (Kaiming-normal, no bias), then the per-channel mean
    and standard deviation over the 8x8 grid: 256 features. The weights depend only on ``seed``, so
    numbers from different runs and machines are comparable with each other (but not with FID).

    Args:
        seed: seed of the random weights.

    Attributes:
        num_features: 256.
    """

    num_features = 256

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        channels = (3, 32, 64, 128)
        self.convs = nn.ModuleList()
        for in_channels, out_channels in itertools.pairwise(channels):
            conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
            with torch.no_grad():
                std = (2.0 / (in_channels * 9)) ** 0.5
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            self.convs.append(conv)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        """Features of images.

        Args:
            images: (B, 3, H, W) float images in [0, 1].

        Returns:
            (B, 256) features.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"ProxyFeatureExtractor expects images (B, 3, H, W); got shape {tuple(images.shape)}"
            )
        x = functional.interpolate(images.float(), size=(64, 64), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # (B, 3, 64, 64)
        for conv in self.convs:
            x = functional.relu(conv(x))  # ends at (B, 128, 8, 8)
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)  # (B, 256)


class ImageDistance:
    """Accumulates real and generated images and returns their Fréchet feature distance.

    Args:
        feature_extractor: module mapping (B, 3, H, W) images in [0, 1] to (B, F) features, with an
            integer ``num_features`` attribute.
        name: what the number is: ``"fid"`` only for the standard FID Inception weights.
        device: where the features are computed.
    """

    def __init__(self, feature_extractor: nn.Module, name: str, device: torch.device | None = None) -> None:
        self.name = name
        # Imported here: torchmetrics' image package costs ~2.5 s to import, and every process that
        # looks up a model would otherwise pay it.
        from torchmetrics.image.fid import FrechetInceptionDistance

        self._metric = FrechetInceptionDistance(
            feature=feature_extractor, normalize=True, reset_real_features=True
        ).to(device or torch.device("cpu"))
        self._counts = {True: 0, False: 0}

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of images to the real or the generated set.

        Args:
            images: (B, 3, H, W) float images in [0, 1] (values outside are clamped).
            real: True for the reference set, False for the generated set.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"ImageDistance.update expects images (B, 3, H, W); got shape {tuple(images.shape)}"
            )
        self._metric.update(images.float().clamp(0, 1).to(self._metric.device), real=real)
        self._counts[bool(real)] += images.shape[0]

    def compute(self) -> float:
        """The Fréchet distance between the two sets accumulated so far (each needs >= 2 images)."""
        if min(self._counts.values()) < 2:
            raise ValueError(
                f"{self.name}: need at least 2 real and 2 generated images; have {self._counts[True]} real "
                f"and {self._counts[False]} generated"
            )
        return float(self._metric.compute())

    def reset(self) -> None:
        """Forget both sets."""
        self._metric.reset()
        self._counts = {True: 0, False: 0}


def build_image_distance(fid_weights: Path | None, device: torch.device | None = None) -> ImageDistance:
    """FID when the standard weights file is given, else the proxy feature distance.

    Args:
        fid_weights: path to ``pt_inception-2015-12-05-6726825d.pth`` (never downloaded), or None.
        device: where features are computed (default CPU).

    Returns:
        An :class:`ImageDistance` named ``"fid"`` (with weights) or ``"proxy_feature_distance"``
        (a :class:`ProxyFeatureExtractor` with seed 0).

    Raises:
        FileNotFoundError / ValueError: from :func:`load_fid_inception` if the file is missing or does
            not match the architecture.
    """
    if fid_weights is None:
        return ImageDistance(ProxyFeatureExtractor(seed=0), "proxy_feature_distance", device)
    return ImageDistance(load_fid_inception(fid_weights), "fid", device)
