"""Batched linear operators: the Newton system's matrix, dense or only as products.

Every operator acts on a batch: ``matvec`` maps (B, n) to (B, m). A solver needs nothing but
``matvec`` (Krylov) or ``to_dense`` (direct), so a Hessian can be a Hessian-vector product and a
Jacobian a JVP without changing the solver.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
from .batched import matvec, rmatvec

MatVec = Callable[[torch.Tensor], torch.Tensor]


class LinearOperator(ABC):
    """A batch of m×n matrices known through products. Subclasses set ``shape = (B, m, n)``."""

    shape: tuple[int, int, int]
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """The product Av for a batch v of shape (B, n)."""

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """Transpose product Aᵀu; dense operators give it for free, matrix-free ones must be told."""
        raise TypeError(f"{type(self).__name__} has no transpose product (rmatvec)")

    def to_dense(self) -> torch.Tensor:
        """Materialize as (B, m, n) by applying the operator to the identity's columns."""
        batch, _, n = self.shape
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        columns = [self.matvec(eye[j].expand(batch, n)) for j in range(n)]
        return torch.stack(columns, dim=-1)

    def diagonal(self) -> torch.Tensor:
        return torch.diagonal(self.to_dense(), dim1=-2, dim2=-1)

    @property
    def T(self) -> "LinearOperator":
        return TransposedOperator(self)

    def shifted(self, shift: torch.Tensor | float) -> "LinearOperator":
        """A + shift·I, with a per-member shift of shape (B,) or a scalar."""
        return ShiftedOperator(self, shift)


class DenseOperator(LinearOperator):
    def __init__(self, matrix: torch.Tensor):
        if matrix.dim() != 3:
            raise ValueError(f"matrix must have shape (B, m, n), got {tuple(matrix.shape)}")
        self.matrix = matrix
        self.shape = tuple(matrix.shape)  # type: ignore[assignment]
        self.dtype, self.device = matrix.dtype, matrix.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return matvec(self.matrix, v)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        return rmatvec(self.matrix, u)

    def to_dense(self) -> torch.Tensor:
        return self.matrix


class MatrixFreeOperator(LinearOperator):
    """An operator given by callables, e.g. a Hessian-vector product or a JVP."""

    def __init__(self, matvec: MatVec, shape: tuple[int, int, int], *, dtype: torch.dtype,
                 device: torch.device | str, rmatvec: MatVec | None = None,
                 diagonal: torch.Tensor | None = None):
        self._matvec, self._rmatvec, self._diagonal = matvec, rmatvec, diagonal
        self.shape, self.dtype, self.device = shape, dtype, torch.device(device)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._matvec(v)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        if self._rmatvec is None:
            return super().rmatvec(u)
        return self._rmatvec(u)

    def diagonal(self) -> torch.Tensor:
        return self._diagonal if self._diagonal is not None else super().diagonal()


class DiagonalOperator(LinearOperator):
    def __init__(self, diag: torch.Tensor):
        self.diag = diag
        batch, n = diag.shape
        self.shape, self.dtype, self.device = (batch, n, n), diag.dtype, diag.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.diag * v

    rmatvec = matvec

    def to_dense(self) -> torch.Tensor:
        return torch.diag_embed(self.diag)

    def diagonal(self) -> torch.Tensor:
        return self.diag

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        return b / self.diag


class LowRankPlusDiagonal(LinearOperator):
    """D + U Vᵀ with D diagonal (B, n) and U, V of shape (B, n, k); solves by Woodbury."""

    def __init__(self, diag: torch.Tensor, U: torch.Tensor, V: torch.Tensor):
        self.diag, self.U, self.V = diag, U, V
        batch, n = diag.shape
        self.shape, self.dtype, self.device = (batch, n, n), diag.dtype, diag.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.diag * v + torch.einsum("bnk,bk->bn", self.U, torch.einsum("bnk,bn->bk", self.V, v))

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        return self.diag * u + torch.einsum("bnk,bk->bn", self.V, torch.einsum("bnk,bn->bk", self.U, u))

    def to_dense(self) -> torch.Tensor:
        return torch.diag_embed(self.diag) + self.U @ self.V.transpose(-1, -2)

    def diagonal(self) -> torch.Tensor:
        return self.diag + (self.U * self.V).sum(-1)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """(D + UVᵀ)⁻¹ b = D⁻¹b − D⁻¹U (I + VᵀD⁻¹U)⁻¹ VᵀD⁻¹b, an O(nk²) solve."""
        dinv_b = b / self.diag
        dinv_U = self.U / self.diag.unsqueeze(-1)
        k = self.U.shape[-1]
        capacitance = torch.eye(k, dtype=self.dtype, device=self.device) + self.V.transpose(-1, -2) @ dinv_U
        rhs = torch.einsum("bnk,bn->bk", self.V, dinv_b)
        return dinv_b - torch.einsum("bnk,bk->bn", dinv_U, torch.linalg.solve(capacitance, rhs))


class TransposedOperator(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op
        batch, m, n = op.shape
        self.shape, self.dtype, self.device = (batch, n, m), op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.rmatvec(v)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(u)

    def to_dense(self) -> torch.Tensor:
        return self.op.to_dense().transpose(-1, -2)


class ShiftedOperator(LinearOperator):
    def __init__(self, op: LinearOperator, shift: torch.Tensor | float):
        batch, m, n = op.shape
        if m != n:
            raise ValueError(f"a shift needs a square operator, got shape {op.shape}")
        self.op = op
        self.shift = torch.as_tensor(shift, dtype=op.dtype, device=op.device).expand(batch)
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(v) + self.shift.unsqueeze(-1) * v

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        return self.op.rmatvec(u) + self.shift.unsqueeze(-1) * u

    def to_dense(self) -> torch.Tensor:
        eye = torch.eye(self.shape[-1], dtype=self.dtype, device=self.device)
        return self.op.to_dense() + self.shift.view(-1, 1, 1) * eye

    def diagonal(self) -> torch.Tensor:
        return self.op.diagonal() + self.shift.unsqueeze(-1)


def as_operator(A: LinearOperator | torch.Tensor) -> LinearOperator:
    """Accept a dense (B, m, n) tensor wherever an operator is expected."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, torch.Tensor):
        return DenseOperator(A)
    raise TypeError(f"A must be a LinearOperator or a (B, m, n) tensor, got {type(A).__name__}")
