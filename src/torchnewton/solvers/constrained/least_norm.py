"""J⁺r and (Jᵀ)⁺g for a batch of constraint Jacobians J (B, m, n): the second-order correction
−J⁺c and the least-squares multipliers argmin ‖g + Jᵀλ‖.

Where J has full row rank and is well conditioned both come from the Gram matrix G = JJᵀ (m × m):

    J⁺r = Jᵀ G⁻¹ r,        (Jᵀ)⁺g = G⁻¹ J g,

one batched Cholesky factorization. On small batched problems that is 4–20x cheaper than the SVD
behind ``torch.linalg.pinv`` (HS7, HS71 at B = 256: 0.05 ms against 0.2–1.3 ms). Forming G
squares the condition number, so a member whose Cholesky factor has a diagonal ratio below 1e-4
(κ(J) ≳ 1e4), or fails, takes the SVD pseudo-inverse instead — as does every member with m > n,
whose G is singular; rank-deficient J keeps the minimum-norm least-squares answer.

Example:
    >>> import torch
    >>> J = torch.tensor([[[2.0, 0.0, 0.0]]], dtype=torch.float64)
    >>> pseudo_solve(J, torch.tensor([[2.0]], dtype=torch.float64))
    tensor([[1., 0., 0.]], dtype=torch.float64)
"""
from __future__ import annotations

import torch

from ...linear.batched import matvec

_CONDITION = 1e-4  # smallest diagonal ratio of chol(JJᵀ) trusted: κ(J) ≲ 1e4


def _gram_factor(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Cholesky factor of JJᵀ, members where it is trusted)."""
    factor, info = torch.linalg.cholesky_ex(torch.bmm(J, J.transpose(-1, -2)))
    diagonal = factor.diagonal(dim1=-2, dim2=-1)
    trusted = (info == 0) & torch.isfinite(diagonal).all(-1) & \
        (diagonal.amin(-1) > _CONDITION * diagonal.amax(-1))
    return factor, trusted


def pseudo_solve(J: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """J⁺r (B, n) for J (B, m, n), r (B, m): the minimum-norm least-squares solution of JΔ = r."""
    factor, trusted = _gram_factor(J)
    out = torch.bmm(J.transpose(-1, -2), torch.cholesky_solve(r.unsqueeze(-1), factor)).squeeze(-1)
    if bool(trusted.all()):
        return out
    return torch.where(trusted.unsqueeze(-1), out, matvec(torch.linalg.pinv(J), r))


def transposed_pseudo_solve(J: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(Jᵀ)⁺g (B, m) for J (B, m, n), g (B, n): argmin_λ ‖Jᵀλ − g‖ of least norm."""
    factor, trusted = _gram_factor(J)
    out = torch.cholesky_solve(matvec(J, g).unsqueeze(-1), factor).squeeze(-1)
    if bool(trusted.all()):
        return out
    return torch.where(trusted.unsqueeze(-1), out, matvec(torch.linalg.pinv(J.transpose(-1, -2)), g))
