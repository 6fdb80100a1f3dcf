"""The (negated, ε-scaled) Hessian of the entropic OT dual as a linear operator, dense or sparsified.

For ψ(f, g) (see :mod:`torchnewton.ot.dual`), −ε∇²ψ = H = [[diag(r), P], [Pᵀ, diag(c)]] with
r = P1, c = Pᵀ1. H = Σ_ij P_ij (e_i + e'_j)(e_i + e'_j)ᵀ is positive semidefinite, with the
gauge null direction (1, −1): adding t to f and subtracting it from g leaves P unchanged.

Sparse Newton (Tang et al. 2024) replaces P off the diagonal by its largest entries P̃ while the
diagonal keeps the exact r and c. That matrix equals Σ_kept P_ij (e_i + e'_j)(e_i + e'_j)ᵀ +
Σ_dropped P_ij (e_i e_iᵀ + e'_j e'_jᵀ), so it stays positive semidefinite for any pattern.

The gauge is removed by fixing coordinates: on the ``free`` mask the operator is H (+ a shift),
on the other coordinates (one fixed potential per member and every zero-mass entry) it is the
identity, and right-hand sides are zero there. The system is then positive definite, which CG
and the Jacobi preconditioner need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..linear.operator import MatrixFreeOperator

Product = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SparsePlan:
    """The k largest entries of each row of P: ``values`` and column ``index``, both (B, n, k);
    ``top_mass`` (B,) is the mass of those k entries before any threshold dropped some."""

    values: torch.Tensor
    index: torch.Tensor
    m: int
    top_mass: torch.Tensor

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """P̃ v for v (B, m), in O(n k)."""
        batch, n, k = self.index.shape
        gathered = torch.gather(v, 1, self.index.reshape(batch, n * k)).view(batch, n, k)
        return (self.values * gathered).sum(-1)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """P̃ᵀ u for u (B, n), in O(n k)."""
        batch, n, k = self.index.shape
        out = torch.zeros(batch, self.m, dtype=u.dtype, device=u.device)
        return out.scatter_add_(1, self.index.reshape(batch, n * k), (self.values * u.unsqueeze(-1)).view(batch, n * k))

    @property
    def nnz(self) -> torch.Tensor:
        """Kept (nonzero) entries per member, (B,)."""
        return (self.values > 0).sum(dim=(-1, -2))


def sparsify(log_p: torch.Tensor, per_row: int, threshold: torch.Tensor) -> SparsePlan:
    """Keep, in each row of P = exp(log_p), its ``per_row`` largest entries, then drop the kept
    entries below ``threshold`` (B,) except each row's largest (so every row stays coupled)."""
    top, index = torch.topk(log_p, per_row, dim=-1)
    values = torch.exp(top)
    small = values < threshold.view(-1, 1, 1)
    small[..., 0] = False
    return SparsePlan(values=torch.where(small, torch.zeros_like(values), values), index=index, m=log_p.shape[-1],
                      top_mass=values.sum(dim=(-1, -2)))


def dense_products(plan: torch.Tensor) -> tuple[Product, Product]:
    """(v ↦ P v, u ↦ Pᵀ u) for a dense plan (B, n, m)."""
    return (lambda v: torch.bmm(plan, v.unsqueeze(-1)).squeeze(-1),
            lambda u: torch.bmm(u.unsqueeze(1), plan).squeeze(1))


def dual_hessian(rows: torch.Tensor, cols: torch.Tensor, plan_matvec: Product, plan_rmatvec: Product,
                 free: torch.Tensor, shift: torch.Tensor | None = None) -> MatrixFreeOperator:
    """The operator (H + shift·I) on ``free`` coordinates and I elsewhere, on vectors (B, n + m).

    ``rows``/``cols`` are the exact marginals of P (the diagonal), the products give the
    off-diagonal block (dense P or a :class:`SparsePlan`), ``shift`` (B,) is a Levenberg shift.
    """
    batch, n = rows.shape
    size = n + cols.shape[-1]
    weight = free.to(rows.dtype)
    diagonal = torch.cat([rows, cols], dim=-1)
    if shift is not None:
        diagonal = diagonal + shift.unsqueeze(-1)
    diagonal = weight * diagonal + (1 - weight)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        v_free = weight * v
        vf, vg = v_free[:, :n], v_free[:, n:]
        out = torch.cat([rows * vf + plan_matvec(vg), cols * vg + plan_rmatvec(vf)], dim=-1)
        if shift is not None:
            out = out + shift.unsqueeze(-1) * v_free
        return weight * out + (1 - weight) * v

    return MatrixFreeOperator(matvec, (batch, size, size), dtype=rows.dtype, device=rows.device,
                              rmatvec=matvec, diagonal=diagonal)


def free_coordinates(problem_a: torch.Tensor, problem_b: torch.Tensor) -> torch.Tensor:
    """Mask (B, n + m) of the Newton variables: positive-mass entries, minus one fixed potential
    per member (g at the largest b) that removes the gauge direction."""
    free = torch.cat([problem_a > 0, problem_b > 0], dim=-1)
    fixed = problem_a.shape[-1] + problem_b.argmax(-1, keepdim=True)
    return free.scatter(1, fixed, False)
