"""A family of small nonlinear systems with random coefficients, for batched-throughput benchmarks.

Each member is F(x) = A x + c ⊙ x³ − b with A = I + K, K a random skew-symmetric matrix, c > 0
and b random. The symmetric part of the Jacobian A + diag(3c x²) is at least the identity, so F
is strongly monotone: every member has exactly one root and a Jacobian that is never singular,
and "solved" has one meaning for every solver. The skew part makes the systems non-symmetric
and the cubic term makes Newton's method need a globalization from x = 0 for large b.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CubicSystems:
    """A batch of B systems of size n: ``matrix`` (B, n, n), ``cubic`` (B, n), ``rhs`` (B, n)."""

    matrix: torch.Tensor
    cubic: torch.Tensor
    rhs: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.rhs.shape)  # type: ignore[return-value]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) for a batch x (B, n), row i with the coefficients of member i."""
        return (self.matrix @ x.unsqueeze(-1)).squeeze(-1) + self.cubic * x**3 - self.rhs

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, n, n) Jacobians A + diag(3c x²)."""
        return self.matrix + torch.diag_embed(3 * self.cubic * x**2)

    def member_np(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, c, b) of member i as float64 numpy arrays, for one-at-a-time solvers."""
        return (self.matrix[i].double().numpy(), self.cubic[i].double().numpy(), self.rhs[i].double().numpy())


def residual_np(x: np.ndarray, matrix: np.ndarray, cubic: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """F(x) of one member, numpy."""
    return matrix @ x + cubic * x**3 - rhs


def jacobian_np(x: np.ndarray, matrix: np.ndarray, cubic: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The Jacobian of one member, numpy (``rhs`` is unused; it keeps the argument list of F)."""
    return matrix + np.diag(3 * cubic * x**2)


def cubic_systems(batch: int, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> CubicSystems:
    """B random members: K = (G − Gᵀ)/2 with G standard normal, c ~ U[0.5, 1.5], b ~ 3·N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    matrix = torch.eye(n, dtype=torch.float64) + 0.5 * (gaussian - gaussian.transpose(-1, -2))
    cubic = 0.5 + torch.rand(batch, n, generator=generator, dtype=torch.float64)
    rhs = 3 * torch.randn(batch, n, generator=generator, dtype=torch.float64)
    return CubicSystems(matrix.to(dtype), cubic.to(dtype), rhs.to(dtype))
