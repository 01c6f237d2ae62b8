"""Small float64 fixed-point problems with exactly known fixed points and implicit gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TanhContraction:
    """f(z) = tanh(A z + W x) per sample, with ‖A‖₂ = contraction < 1 (so f is a contraction)."""

    A: Tensor  # (B, D, D)
    W: Tensor  # (D, D)
    x: Tensor  # (B, D), requires grad

    @staticmethod
    def random(batch: int = 3, dim: int = 5, contraction: float = 0.6, seed: int = 0) -> TanhContraction:
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64)
        A = contraction * A / torch.linalg.matrix_norm(A, 2)[:, None, None]
        W = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
        x = torch.randn(batch, dim, generator=g, dtype=torch.float64).requires_grad_()
        return TanhContraction(A, W, x)

    def __call__(self, z: Tensor) -> Tensor:
        return torch.tanh(torch.einsum("bij,bj->bi", self.A, z) + self.x @ self.W.T)

    def jacobians(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(∂f/∂z, ∂f/∂x) at z, each (B, D, D)."""
        pre = torch.einsum("bij,bj->bi", self.A, z) + self.x.detach() @ self.W.T
        slope = 1 - torch.tanh(pre) ** 2  # (B, D)
        return slope[:, :, None] * self.A, slope[:, :, None] * self.W[None]

    def exact_fixed_point(self) -> Tensor:
        z = torch.zeros_like(self.x.detach())
        with torch.no_grad():
            for _ in range(500):
                z = self(z)
        return z

    def implicit_gradient(self, z_star: Tensor, upstream: Tensor) -> Tensor:
        """dℓ/dx for ℓ = Σ upstream · z*, by the implicit function theorem with an exact solve."""
        J_z, J_x = self.jacobians(z_star)
        eye = torch.eye(z_star.shape[1], dtype=z_star.dtype)
        u = torch.linalg.solve((eye - J_z).transpose(1, 2), upstream)  # uᵀ (I − J) = upstream
        return torch.einsum("bi,bij->bj", u, J_x)


@dataclass
class AffineMap:
    """f(z) = A z + x per sample: fixed point (I − A)⁻¹ x; the Neumann series is exact."""

    A: Tensor  # (B, D, D)
    x: Tensor  # (B, D)

    @staticmethod
    def random(batch: int = 3, dim: int = 4, contraction: float = 0.7, seed: int = 0) -> AffineMap:
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64)
        A = contraction * A / torch.linalg.matrix_norm(A, 2)[:, None, None]
        x = torch.randn(batch, dim, generator=g, dtype=torch.float64).requires_grad_()
        return AffineMap(A, x)

    def __call__(self, z: Tensor) -> Tensor:
        return torch.einsum("bij,bj->bi", self.A, z) + self.x

    def fixed_point(self) -> Tensor:
        eye = torch.eye(self.A.shape[1], dtype=self.A.dtype)
        return torch.linalg.solve(eye - self.A, self.x.detach())
