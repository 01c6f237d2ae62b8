"""The error of the all-background image: the yardstick that says whether a dVAE decodes objects.

The all-background image is the dVAE's decoding of a token grid that holds, everywhere, the single most
frequent token of the evaluated split. On scenes of a few objects on a plain background, a dVAE that has
learned no object tokens reconstructs about as badly as this image; a ``mse_dvae`` well below
``mse_background`` means the tokens describe the objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from implicit_slots.models.slate import DiscreteVAE

__all__ = ["BackgroundError", "BackgroundErrorAccumulator"]


@dataclass
class BackgroundError:
    """The all-background image and its error.

    Attributes:
        mse: mean over images of the summed squared error (SLATE's MSE convention) of the image.
        token: the most frequent token.
        token_fraction: the fraction of token positions that hold it.
        tokens_used: the number of distinct tokens of the split.
        image: (3, H, W) the all-background image, clamped to [0, 1].
    """

    mse: float
    token: int
    token_fraction: float
    tokens_used: int
    image: Tensor


class BackgroundErrorAccumulator:
    """One pass over a split: token counts and the image sums the error needs.

    ``sum_i ||x_i - b||^2 = sum_i ||x_i||^2 - 2 <b, sum_i x_i> + N ||b||^2``, so the background image ``b``,
    known only at the end, needs no second pass.
    """

    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self.counts = torch.zeros(vocab_size, dtype=torch.long, device=device)  # (V,)
        self.image_sum: Tensor | None = None  # (3, H, W) float64
        self.square_sum = 0.0
        self.num_images = 0

    def update(self, image: Tensor, tokens: Tensor) -> None:
        """Add a batch: images (B, 3, H, W) in [0, 1] and their argmax tokens (B, T) long."""
        self.counts += torch.bincount(tokens.flatten(), minlength=self.counts.numel())
        batch_sum = image.double().sum(dim=0)  # (3, H, W)
        self.image_sum = batch_sum if self.image_sum is None else self.image_sum + batch_sum
        self.square_sum += float(image.double().square().sum())
        self.num_images += image.shape[0]

    @torch.no_grad()
    def compute(self, dvae: DiscreteVAE, grid_size: int) -> BackgroundError:
        """Decode the all-background grid (grid_size x grid_size tokens) and return its error."""
        if self.image_sum is None:
            raise ValueError("no images were added")
        token = int(self.counts.argmax())
        grid = torch.full((1, grid_size, grid_size), token, device=self.counts.device)
        image = dvae.decode_tokens(grid).clamp(0.0, 1.0)[0].double()  # (3, H, W)
        total = (
            self.square_sum
            - 2.0 * float((image * self.image_sum).sum())
            + self.num_images * float(image.square().sum())
        )
        return BackgroundError(
            mse=total / self.num_images,
            token=token,
            token_fraction=float(self.counts[token]) / float(self.counts.sum()),
            tokens_used=int((self.counts > 0).sum()),
            image=image.float(),
        )
