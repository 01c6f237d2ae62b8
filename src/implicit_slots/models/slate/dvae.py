"""SLATE's discrete VAE: a 4x4-patch convolutional tokenizer with a Gumbel-softmax relaxation.

The encoder maps an image (B, 3, H, W) to logits over ``vocab_size`` tokens on an (h, w) = (H/4, W/4)
grid, channels last (B, h, w, V); the decoder maps a (soft or hard) one-hot grid back to pixels. The
architecture is SLATE's (Singh et al. 2022, ``dvae.py``): convolution blocks with no bias, single-group
GroupNorm and ReLU, two PixelShuffle(2) upsamplings in the decoder. There is no KL term: the dVAE is
trained by the reconstruction MSE only.

SLATE's two 1x1 convolutions into and out of the vocabulary (64 -> V logits, V -> 64 from the one-hot) are
linear layers on channels-last features here: the same maths and parameter count, but plain matrix products,
and the softmax, argmax and Gumbel noise run over a contiguous last dimension (about 30% faster than the
1x1-convolution layout in a micro-benchmark at B=32, V=1024).

Gumbel noise is drawn once per step (:func:`sample_gumbel_tokens`); both the relaxed sample the decoder
consumes and the hard token the transformer predicts are derived from that single draw (see the function's
docstring for why this keeps every marginal distribution of SLATE's two independent draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH_SIZE = 4  # the encoder's only stride: each token covers a 4x4 pixel patch


class Conv2dBlock(nn.Module):
    """Convolution (no bias, Kaiming-uniform) -> GroupNorm(1 group, learned affine) -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ):
        """Create the block.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            kernel_size: square kernel size.
            stride: convolution stride.
            padding: zero padding on each side.
        """
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        self.norm = nn.GroupNorm(1, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return F.relu(self.norm(self.conv(x)))


def _output_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution with Xavier-uniform weight and zero bias (SLATE's plain ``conv2d``)."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return conv


@dataclass
class GumbelSample:
    """One Gumbel-softmax draw over a token grid.

    Attributes:
        soft: relaxed one-hot sample (B, h, w, V) in at least float32, differentiable w.r.t. the logits.
        tokens: the hard tokens of the same draw, long (B, h, w), ``tokens == soft.argmax(-1)``.
    """

    soft: Tensor
    tokens: Tensor


def sample_gumbel_tokens(
    logits: Tensor, temperature: float, generator: torch.Generator | None = None
) -> GumbelSample:
    """Draw Gumbel noise once and derive the relaxed sample and the hard token from it.

    SLATE calls ``gumbel_softmax`` twice on the same logits: once relaxed (``softmax((l + g1) / tau)``, fed to
    the dVAE decoder) and once hard (``one_hot(argmax(l + g2))``, the transformer's target), with independent
    noise ``g1``, ``g2``. Here one draw ``g`` gives both: ``soft = softmax((l + g) / tau)`` and
    ``tokens = argmax(l + g) = argmax(soft)``. Each of the two has exactly SLATE's distribution (``g`` has
    the same law as ``g1`` and as ``g2``); only their coupling differs (SLATE's are independent, ours are
    the argmax of each other). The dVAE's gradient depends on ``soft`` alone and the transformer's on
    ``tokens`` alone, so the distribution of each group's gradient is unchanged; the coupling could only
    matter through a global (all-parameter) gradient-clipping coefficient. It halves the cost of the
    noise, the single most expensive element-wise op of a SLATE step (B x V x h x w draws).

    SLATE applies ``log_softmax`` to the logits before sampling; that shifts every position's logits by a
    constant, which neither the softmax nor the argmax sees, so it is skipped.

    The noise is drawn, and the sample computed, in at least float32 whatever the logits' dtype: under bf16
    autocast the logits arrive in bf16, whose 8-bit mantissa would leave about a thousand distinct uniform
    values and cut the Gumbel tail near 5.5.

    Args:
        logits: unnormalised token logits, (B, h, w, V).
        temperature: Gumbel-softmax temperature tau > 0.
        generator: optional random generator for the noise.

    Returns:
        The relaxed sample and the hard tokens of the same draw.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    with torch.no_grad():
        # Gumbel(0, 1) = -log(-log U), U ~ Uniform(0, 1); computed in place (4x cheaper than exponential_).
        noise = torch.rand(logits.shape, dtype=dtype, device=logits.device, generator=generator)
        noise.clamp_(min=torch.finfo(dtype).tiny).log_().neg_().log_().neg_()  # (B, h, w, V)
    perturbed = logits.to(dtype) + noise  # (B, h, w, V)
    tokens = perturbed.detach().argmax(dim=-1)  # (B, h, w)
    soft = torch.softmax(perturbed / temperature, dim=-1)  # (B, h, w, V)
    return GumbelSample(soft=soft, tokens=tokens)


class DiscreteVAE(nn.Module):
    """SLATE's dVAE: ``encode`` gives token logits on a 4x4-patch grid, ``decode`` renders a token grid.

    Example:
        >>> dvae = DiscreteVAE(vocab_size=16, hidden_channels=8)
        >>> logits = dvae.encode(torch.rand(2, 3, 16, 16))  # (2, 4, 4, 16)
        >>> dvae.decode_tokens(logits.argmax(-1)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, vocab_size: int = 1024, hidden_channels: int = 64, image_channels: int = 3):
        """Create the encoder and decoder.

        Args:
            vocab_size: number of discrete tokens V.
            hidden_channels: width of every hidden convolution (SLATE: 64).
            image_channels: image channels (3 for RGB).
        """
        super().__init__()
        self.vocab_size = vocab_size
        c = hidden_channels
        self.encoder = nn.Sequential(
            Conv2dBlock(image_channels, c, PATCH_SIZE, PATCH_SIZE),
            *[Conv2dBlock(c, c, 1) for _ in range(6)],
        )
        # SLATE's final 1x1 convolution c -> V (Xavier-uniform, zero bias), applied channels last.
        self.token_logits = nn.Linear(c, vocab_size)
        nn.init.xavier_uniform_(self.token_logits.weight)
        nn.init.zeros_(self.token_logits.bias)
        # The decoder's first block (SLATE: 1x1 conv V -> c without bias, GroupNorm, ReLU) reads a one-hot
        # grid: its weight is a lookup table, applied as a matrix product to relaxed samples and as an index
        # lookup to hard tokens.
        self.token_features = nn.Linear(vocab_size, c, bias=False)
        nn.init.kaiming_uniform_(self.token_features.weight, nonlinearity="relu")
        self.token_features_norm = nn.GroupNorm(1, c)
        self.decoder = nn.Sequential(
            Conv2dBlock(c, c, 3, 1, 1),
            Conv2dBlock(c, c, 1),
            Conv2dBlock(c, c, 1),
            Conv2dBlock(c, c * 4, 1),
            nn.PixelShuffle(2),
            Conv2dBlock(c, c, 3, 1, 1),
            Conv2dBlock(c, c, 1),
            Conv2dBlock(c, c, 1),
            Conv2dBlock(c, c * 4, 1),
            nn.PixelShuffle(2),
            _output_conv(c, image_channels),
        )

    def _decode_features(self, features: Tensor) -> Tensor:
        """Channels-last token features (B, h, w, c) -> image (B, C, 4h, 4w)."""
        features = features.permute(0, 3, 1, 2)  # (B, c, h, w)
        return self.decoder(F.relu(self.token_features_norm(features)))

    def encode(self, image: Tensor) -> Tensor:
        """Token logits of an image.

        Args:
            image: (B, C, H, W) in [0, 1]; H and W divisible by 4.

        Returns:
            Unnormalised logits (B, H/4, W/4, V), channels last.
        """
        if image.shape[-1] % PATCH_SIZE or image.shape[-2] % PATCH_SIZE:
            raise ValueError(
                f"image height and width must be multiples of {PATCH_SIZE}, got {tuple(image.shape)}"
            )
        features = self.encoder(image).permute(0, 2, 3, 1)  # (B, h, w, c)
        return self.token_logits(features)  # (B, h, w, V)

    def decode_soft(self, soft: Tensor) -> Tensor:
        """Render a relaxed one-hot grid (B, h, w, V) into an image (B, C, 4h, 4w) (unclamped)."""
        return self._decode_features(self.token_features(soft))

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        """Render hard tokens (B, h, w) into an image (B, C, 4h, 4w) (unclamped).

        Equal to ``decode_soft(one_hot(tokens))`` without building the (B, h, w, V) one-hot: the linear map
        of a one-hot vector is a column of its weight.
        """
        table = self.token_features.weight.t()  # (V, c)
        return self._decode_features(F.embedding(tokens, table))  # (B, h, w, c) -> image
