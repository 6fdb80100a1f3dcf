"""Preconditioners M⁻¹ for the public Krylov solvers: callables (B, n) → (B, n).

``jacobi_preconditioner`` and ``ssor_preconditioner`` are pure torch (any device);
``ilu_preconditioner`` (SuperLU's incomplete LU through ``scipy.sparse.linalg.spilu``) and
``amg_preconditioner`` (one PyAMG V-cycle) factor on the CPU with those libraries and apply
through numpy — they are for CPU tensors, and PyAMG is optional.

Example:
    >>> import scipy.sparse as sp
    >>> from torchnewton.linear.iterative import cg
    >>> A = sp.diags([[-1.0] * 99, [4.0] * 100, [-1.0] * 99], [-1, 0, 1]).tocsr()
    >>> b = torch.ones(100, dtype=torch.float64)
    >>> cg(A, b, M=jacobi_preconditioner(A), rtol=1e-10).success
    True
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .matrix import SquareOperator, aslinearoperator


class Preconditioner:
    """M⁻¹ as a callable on (B, n) (or (n,)); ``name`` says which."""

    def __init__(self, apply: Callable[[torch.Tensor], torch.Tensor], n: int, name: str):
        self._apply, self.n, self.name = apply, n, name

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 1:
            return self._apply(X.unsqueeze(0))[0]
        return self._apply(X)

    def __repr__(self) -> str:
        return f"Preconditioner({self.name}, n={self.n})"


def jacobi_preconditioner(A: Any) -> Preconditioner:
    """M = diag(A). Raises ValueError on a zero or non-finite diagonal entry."""
    op = aslinearoperator(A)
    diag = op.diagonal()
    if not bool(torch.isfinite(diag).all()) or bool((diag == 0).any()):
        raise ValueError("A has a zero or non-finite diagonal entry; Jacobi needs diag(A) invertible")
    inverse = (1.0 / diag).to(op.device)
    return Preconditioner(lambda X: X * inverse, op.shape[0], "jacobi")


def _scipy_of(A: Any) -> Any:
    op = aslinearoperator(A)
    return op.to_scipy(), op


def ilu_preconditioner(A: Any, *, drop_tol: float = 0.0, fill_factor: float = 1.0) -> Preconditioner:
    """Incomplete LU from ``scipy.sparse.linalg.spilu`` (SuperLU's threshold ILU, natural order,
    no pivoting). ``fill_factor=1`` keeps the fill at the level of A (an ILU(0)-sized factor, not
    exactly ILU(0)); raise it, with a ``drop_tol``, for a stronger factor. The factor is not
    symmetric in general: use it with GMRES or BiCGSTAB, and SSOR, Jacobi or AMG with CG.
    scipy has no incomplete Cholesky; none is offered here."""
    import scipy.sparse.linalg as spla

    matrix, op = _scipy_of(A)
    # natural ordering without pivoting keeps the factor of a symmetric matrix symmetric (usable in CG)
    factor = spla.spilu(matrix.tocsc(), drop_tol=drop_tol, fill_factor=fill_factor, permc_spec="NATURAL",
                        diag_pivot_thresh=0.0)
    dtype = op.dtype

    def apply(X: torch.Tensor) -> torch.Tensor:
        out = factor.solve(np.ascontiguousarray(X.detach().cpu().numpy().T))
        return torch.from_numpy(np.ascontiguousarray(np.asarray(out).reshape(X.shape[1], -1).T)).to(dtype=dtype, device=X.device)
    return Preconditioner(apply, op.shape[0], "ilu")


def amg_preconditioner(A: Any, *, kind: str = "smoothed_aggregation", **options: Any) -> Preconditioner:
    """One algebraic-multigrid V-cycle (PyAMG) as M⁻¹; ``kind`` is ``"smoothed_aggregation"`` or
    ``"ruge_stuben"``, ``options`` go to the PyAMG constructor."""
    try:
        import pyamg
    except ImportError as error:  # optional dependency
        raise ImportError("amg_preconditioner needs PyAMG: pip install pyamg") from error
    builders = {"smoothed_aggregation": pyamg.smoothed_aggregation_solver, "ruge_stuben": pyamg.ruge_stuben_solver}
    if kind not in builders:
        raise ValueError(f"kind must be one of {sorted(builders)}, got {kind!r}")
    matrix, op = _scipy_of(A)
    hierarchy = builders[kind](matrix, **options)
    cycle = hierarchy.aspreconditioner(cycle="V")
    dtype = op.dtype

    def apply(X: torch.Tensor) -> torch.Tensor:
        rows = [cycle.matvec(row) for row in X.detach().cpu().numpy()]
        return torch.from_numpy(np.stack(rows)).to(dtype=dtype, device=X.device)
    return Preconditioner(apply, op.shape[0], f"amg-{kind}")


def triangular_parts(op: SquareOperator, omega: float, *, dense_limit: int = 600) -> tuple[Any, Any, torch.Tensor]:
    """(D/ω + L, D/ω + U, D) as torch matrices: dense below ``dense_limit`` unknowns (a dense
    triangular solve is faster than the sparse one there), sparse CSR above."""
    import scipy.sparse as sp

    from .matrix import _csr_from_scipy

    matrix = op.to_scipy()
    d = matrix.diagonal()
    if np.any(d == 0) or not np.all(np.isfinite(d)):
        raise ValueError("A has a zero or non-finite diagonal entry; SOR/SSOR need diag(A) invertible")
    lower = (sp.tril(matrix, -1) + sp.diags(d / omega)).tocsr()
    upper = (sp.triu(matrix, 1) + sp.diags(d / omega)).tocsr()
    diag = torch.from_numpy(d).to(op.dtype)
    if op.shape[0] <= dense_limit:
        return (torch.from_numpy(lower.toarray()).to(op.dtype), torch.from_numpy(upper.toarray()).to(op.dtype), diag)
    return _csr_from_scipy(lower, op.dtype, op.device), _csr_from_scipy(upper, op.dtype, op.device), diag


def triangular_solve(T: torch.Tensor, R: torch.Tensor, *, upper: bool) -> torch.Tensor:
    """T⁻¹ Rᵀ for the rows of R (B, n), T dense or sparse CSR triangular."""
    if T.layout == torch.sparse_csr:
        return torch.triangular_solve(R.T.contiguous(), T, upper=upper).solution.T
    return torch.linalg.solve_triangular(T, R.T, upper=upper).T


def ssor_preconditioner(A: Any, omega: float = 1.0) -> Preconditioner:
    """Symmetric SOR: M = (D + ωL) D⁻¹ (D + ωU) / (ω(2−ω)) = (D/ω + L)(D/ω)⁻¹(D/ω + U) / (2−ω),
    SPD when A is, for 0 < ω < 2
    (Saad, Iterative Methods for Sparse Linear Systems, §4.1 and §10.2)."""
    if not isinstance(omega, (int, float)) or isinstance(omega, bool) or not 0 < omega < 2:
        raise ValueError(f"omega must be in (0, 2), got {omega!r}")
    op = aslinearoperator(A)
    lower, upper, diag = triangular_parts(op, omega)
    scale = 2.0 - omega

    def apply(X: torch.Tensor) -> torch.Tensor:
        y = triangular_solve(lower, X, upper=False)
        return scale * triangular_solve(upper, y * (diag / omega), upper=True)
    return Preconditioner(apply, op.shape[0], f"ssor(omega={omega:g})")
