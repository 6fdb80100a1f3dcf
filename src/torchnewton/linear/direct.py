"""Direct solves of small dense batched systems, with an honest fallback when they are singular.

Cholesky is tried for symmetric systems, LU otherwise; a member whose factorization fails or
whose solution is not finite is solved again with Tikhonov regularization (AᵀA + λI) x = Aᵀb,
λ scaled to ‖A‖, and is marked ``Status.SINGULAR`` so the caller can say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.status import Status
from .operator import LinearOperator, as_operator
from .solution import LinearSolution
from .batched import matvec, rmatvec


def _regularized_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """min ‖Ax − b‖² + λ‖x‖² with λ = √eps·‖A‖²_F: finite for any A, exact as A becomes regular."""
    eps = torch.finfo(A.dtype).eps
    AtA = A.transpose(-1, -2) @ A
    lam = (eps ** 0.5) * AtA.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=torch.finfo(A.dtype).tiny)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    rhs = rmatvec(A, b)
    L, info = torch.linalg.cholesky_ex(AtA + lam.view(-1, 1, 1) * eye)
    x = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)
    # a non-finite A leaves info > 0: such members get x = 0 and stay SINGULAR
    return torch.where((info == 0).unsqueeze(-1) & torch.isfinite(x), x, torch.zeros_like(x))


def solve_dense(A: LinearOperator | torch.Tensor, b: torch.Tensor, *, symmetric: bool = False) -> LinearSolution:
    """Solve the batch of square systems A x = b, A (B, n, n), b (B, n).

    ``residual_norm`` is computed only when read (a Newton step on a small system takes x and
    the status, and the product would be a fifth of its work). A batch of one on the CPU reads the pivots back once and decides on floats (no masks).

    Example:
        >>> A = torch.eye(3).expand(2, 3, 3); b = torch.ones(2, 3)
        >>> solve_dense(A, b).x
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    matrix = as_operator(A).to_dense()
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"A must be square, got shape {tuple(matrix.shape)}")
    rhs = b.unsqueeze(-1)
    if matrix.shape[0] == 1 and matrix.is_cpu and not symmetric:  # no sync to read back
        x, ok = lu_solve_one(matrix, rhs)
        if not ok:
            x = _regularized_solve(matrix, b)
        status = torch.full((1,), int(Status.SUCCESS if ok else Status.SINGULAR), device=b.device)
    else:
        if symmetric:
            L, info = torch.linalg.cholesky_ex(matrix)
            x = torch.cholesky_solve(rhs, L).squeeze(-1)
            ok = (info == 0) & torch.isfinite(x).all(-1)
            if not bool(ok.all()):
                x_lu, lu_ok = _lu_solve(matrix, rhs)
                x = torch.where(ok.unsqueeze(-1), x, x_lu)
                ok = ok | lu_ok
        else:
            x, ok = _lu_solve(matrix, rhs)
        if not bool(ok.all()):
            x = torch.where(ok.unsqueeze(-1), x, _regularized_solve(matrix, b))
        status = torch.where(ok, int(Status.SUCCESS), int(Status.SINGULAR))
    return LinearSolution(x=x, status=status, iterations=torch.zeros_like(status),
                          residual_norm=lambda: (b - matvec(matrix, x)).norm(dim=-1))


def lu_solve_one(matrix: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """:func:`_lu_solve` of a batch of one, its tests on the pivots and x read back as floats (the
    single-problem path of :func:`solve_dense`, also the homotopy corrector's)."""
    LU, pivots, info = torch.linalg.lu_factor_ex(matrix)
    x = torch.linalg.lu_solve(LU, pivots, rhs).squeeze(-1)
    diagonal = [abs(v) for v in LU.diagonal(dim1=-2, dim2=-1).tolist()[0]]
    largest = max(diagonal)
    regular = min(diagonal) > LU.shape[-1] * torch.finfo(LU.dtype).eps * max(largest, torch.finfo(LU.dtype).tiny)
    # a NaN pivot fails the comparison above, so x is tested for Inf/NaN only where it can pass
    return x, regular and int(info) == 0 and all(map(math.isfinite, x.tolist()[0]))


def _lu_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    LU, pivots, info = torch.linalg.lu_factor_ex(matrix)
    x = torch.linalg.lu_solve(LU, pivots, rhs).squeeze(-1)
    # LU "succeeds" on matrices singular to working precision: tiny pivots give them away
    return x, (info == 0) & torch.isfinite(x).all(-1) & _well_conditioned(LU)


def _well_conditioned(LU: torch.Tensor) -> torch.Tensor:
    """Reject pivots below n·eps relative to the largest: the matrix is singular to working precision."""
    smallest, largest = torch.aminmax(LU.diagonal(dim1=-2, dim2=-1).abs(), dim=-1)
    n = LU.shape[-1]
    return smallest > n * torch.finfo(LU.dtype).eps * largest.clamp(min=torch.finfo(LU.dtype).tiny)


@dataclass
class CholeskyFactor:
    """A reusable factorization of SPD (B, n, n) matrices, e.g. a lazily refreshed Hessian.

    ``ok`` (B,) is False where the matrix was not positive definite; ``solve`` then uses the
    regularized least-squares fallback for those members. Whether all are ok is read back once,
    on the first solve, not at every solve with the same factor.
    """

    matrix: torch.Tensor
    L: torch.Tensor
    ok: torch.Tensor
    _all_ok: bool | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def factor(cls, matrix: torch.Tensor) -> "CholeskyFactor":
        L, info = torch.linalg.cholesky_ex(matrix)
        return cls(matrix=matrix, L=L, ok=info == 0)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        x = torch.cholesky_solve(b.unsqueeze(-1), self.L).squeeze(-1)
        if self._all_ok is None:
            self._all_ok = bool(self.ok.all())
        if self._all_ok:
            return x
        return torch.where(self.ok.unsqueeze(-1), x, _regularized_solve(self.matrix, b))
