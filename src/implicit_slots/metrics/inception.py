"""The "FID Inception" network: InceptionV3 as used by TensorFlow's FID code and pytorch-fid.

FID is only comparable across papers when computed with the exact TensorFlow Inception graph of
2015-12-05. pytorch-fid ships those weights converted to PyTorch as
``pt_inception-2015-12-05-6726825d.pth`` (state-dict keys in torchvision's ``Inception3`` naming) and
patches four blocks to match the TensorFlow graph. This module re-implements that architecture in
plain torch (no torchvision) from its published description:

* ``BasicConv2d`` = convolution without bias + BatchNorm (eps 0.001) + ReLU;
* stem: ``Conv2d_1a_3x3`` (3->32, stride 2), ``Conv2d_2a_3x3`` (32->32), ``Conv2d_2b_3x3`` (32->64, pad 1),
  max-pool 3/2, ``Conv2d_3b_1x1`` (64->80), ``Conv2d_4a_3x3`` (80->192), max-pool 3/2;
* ``Mixed_5b/5c/5d`` (Inception-A, pool features 32/64/64), ``Mixed_6a`` (B),
  ``Mixed_6b..6e`` (C, 7x7 channels 128/160/160/192), ``Mixed_7a`` (D), ``Mixed_7b/7c`` (E);
* the FID patches: the average pools inside A, C and ``Mixed_7b`` exclude the padding from the count
  (``count_include_pad=False``), and ``Mixed_7c`` uses a *max* pool in its pool branch;
* input: bilinear resize to 299x299 (``align_corners=False``) and scaling from [0, 1] to [-1, 1];
  output: the 2048-dim global-average-pooled features of ``Mixed_7c``.

The weights are never downloaded: :func:`load_fid_inception` reads a file the user provides.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
"""The name pytorch-fid gives the converted TensorFlow FID Inception weights."""

_IGNORED_KEYS = ("fc.weight", "fc.bias")  # the 1008-way classifier; FID uses the pool features


class BasicConv2d(nn.Module):
    """Convolution (no bias) -> BatchNorm (eps 0.001) -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return functional.relu(self.bn(self.conv(x)))


def _average_pool(x: Tensor) -> Tensor:
    # The TensorFlow graph averages only over real (non-padding) pixels.
    return functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1, 5x5, double 3x3 and pool branches; 224 + ``pool_features`` channels out."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_average_pool(x))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17; 384 + 96 + ``in_channels`` channels out."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = functional.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], dim=1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches with ``channels_7x7`` inner channels; 768 channels out."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_average_pool(x))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8; 320 + 192 + ``in_channels`` channels out."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = functional.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b / 7c: expanded 3x3 branches; 2048 channels out.

    Args:
        in_channels: input channels (1280 for Mixed_7b, 2048 for Mixed_7c).
        pool: ``"average"`` (Mixed_7b, padding excluded) or ``"max"`` (Mixed_7c, the TensorFlow graph's
            max pool).
    """

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("average", "max"):
            raise ValueError(f"InceptionE pool must be 'average' or 'max'; got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], dim=1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], dim=1
        )
        if self.pool == "average":
            pooled = _average_pool(x)
        else:
            pooled = functional.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(pooled)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], dim=1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 feature extractor of FID (2048-dim pool features), in evaluation mode.

    Build it with random weights for tests, or with :func:`load_fid_inception` for real FID.

    Attributes:
        num_features: 2048, the feature dimension (read by torchmetrics' ``FrechetInceptionDistance``).
    """

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="average")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Stay in evaluation mode (frozen BatchNorm statistics) whatever ``mode`` says."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Pool features of images.

        Args:
            images: (B, 3, H, W) float images in [0, 1], any size (resized to 299x299).

        Returns:
            (B, 2048) features.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects images (B, 3, H, W); got shape {tuple(images.shape)}")
        x = functional.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # (B, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = functional.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = functional.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (B, 2048)


def _strip_batch_counters(keys: set[str]) -> set[str]:
    return {key for key in keys if not key.endswith("num_batches_tracked")}


def load_fid_inception(path: Path | str) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` with the standard FID weights read from a local file.

    Args:
        path: the pytorch-fid weights file (``pt_inception-2015-12-05-6726825d.pth``); a state dict in
            torchvision ``Inception3`` key naming. Its ``fc.*`` classifier entries and BatchNorm
            ``num_batches_tracked`` counters are ignored.

    Returns:
        The network in evaluation mode, without gradients.

    Raises:
        FileNotFoundError: the file does not exist (it is never downloaded).
        ValueError: the file is not a state dict, or its keys or shapes do not match the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception weights not found at {path}; FID needs the standard pytorch-fid weights file "
            f"{FID_WEIGHTS_FILENAME} (it is never downloaded; pass its local path, or omit it to use the "
            "proxy distance)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or non-torch file: report which file
        raise ValueError(f"could not read FID Inception weights from {path}: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    model = FIDInceptionV3()
    expected = model.state_dict()
    found_keys = _strip_batch_counters(set(state)) - set(_IGNORED_KEYS)
    expected_keys = _strip_batch_counters(set(expected))
    missing = sorted(expected_keys - found_keys)
    unexpected = sorted(found_keys - expected_keys)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the FID InceptionV3 architecture: {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
    wrong_shapes = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(expected_keys)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if wrong_shapes:
        raise ValueError(
            f"{path}: tensor shapes do not match the FID InceptionV3 architecture: {wrong_shapes[:5]}"
        )
    model.load_state_dict({key: state[key] for key in expected_keys}, strict=False)
    return model
