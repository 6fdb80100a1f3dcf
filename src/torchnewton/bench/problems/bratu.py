"""The 2-D Bratu problem −Δu − λ eᵘ = 0 on the unit square, u = 0 on the boundary.

Five-point finite differences on an N×N grid of interior points, h = 1/(N + 1):
F(u)_ij = (4u_ij − u_i−1,j − u_i+1,j − u_i,j−1 − u_i,j+1)/h² − λ exp(u_ij). Solutions exist for
λ below λ* ≈ 6.808; from u = 0 Newton's method finds the lower branch.

The preconditioner is the exact inverse of the discrete Laplacian −Δ_h (the Jacobian at λ = 0),
applied by the sine eigenbasis of the 1-D second difference: −Δ_h = (Q ⊗ Q) diag(μ_i + μ_j) (Q ⊗ Q)
with Q symmetric orthogonal, so M⁻¹R = Q ((Q R Q) / (μ_i + μ_j)) Q for R reshaped to N×N. The
torch and numpy versions apply the same operator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Bratu2D:
    """The discretized problem on an N×N interior grid; unknowns are u flattened row-major (N²,)."""

    size: int
    parameter: float = 6.0

    @property
    def spacing(self) -> float:
        return 1.0 / (self.size + 1)

    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """(Q, μ_i + μ_j): sine eigenvectors and eigenvalue sums of −Δ_h, float64."""
        N, h = self.size, self.spacing
        k = np.arange(1, N + 1)
        Q = math.sqrt(2.0 / (N + 1)) * np.sin(np.outer(k, k) * math.pi / (N + 1))
        mu = (2 - 2 * np.cos(k * math.pi / (N + 1))) / h**2
        return Q, mu[:, None] + mu[None, :]

    # torch (batched: u of shape (B, N²))

    def residual(self, u: torch.Tensor) -> torch.Tensor:
        N, h = self.size, self.spacing
        U = u.reshape(-1, N, N)
        P = torch.nn.functional.pad(U, (1, 1, 1, 1))
        laplacian = (4 * U - P[:, :-2, 1:-1] - P[:, 2:, 1:-1] - P[:, 1:-1, :-2] - P[:, 1:-1, 2:]) / h**2
        return (laplacian - self.parameter * torch.exp(U)).reshape(u.shape)

    def preconditioner(self, like: torch.Tensor):
        """r ↦ (−Δ_h)⁻¹ r on (B, N²), in the dtype and on the device of ``like``."""
        Q, denominator = (torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in self._eigen())
        N = self.size

        def apply(r: torch.Tensor) -> torch.Tensor:
            R = r.reshape(-1, N, N)
            return (Q @ ((Q @ R @ Q) / denominator) @ Q).reshape(r.shape)

        return apply

    # numpy (one grid: u of shape (N²,))

    def residual_np(self, u: np.ndarray) -> np.ndarray:
        N, h = self.size, self.spacing
        U = u.reshape(N, N)
        P = np.pad(U, 1)
        laplacian = (4 * U - P[:-2, 1:-1] - P[2:, 1:-1] - P[1:-1, :-2] - P[1:-1, 2:]) / h**2
        return (laplacian - self.parameter * np.exp(U)).ravel()

    def preconditioner_np(self):
        """The same operator as :meth:`preconditioner`, as a function of a numpy vector (N²,)."""
        Q, denominator = self._eigen()
        N = self.size
        return lambda r: (Q @ ((Q @ np.asarray(r).reshape(N, N) @ Q) / denominator) @ Q).ravel()
