"""Square roots and inverse p-th roots of symmetric positive definite matrices by Newton iterations.

``sqrtm`` / ``inv_sqrtm``: the coupled Newton–Schulz iteration (Higham, "Functions of Matrices",
2008, eq. (6.35)): with Y_0 = A / c, Z_0 = I, c = ||A||_F,

    T_k = (3I - Z_k Y_k) / 2,     Y_{k+1} = Y_k T_k,     Z_{k+1} = T_k Z_k,

Y_k -> (A/c)^{1/2} and Z_k -> (A/c)^{-1/2}; it is the sign iteration of [[0, A/c], [I, 0]], uses
only matrix products, and converges for eigenvalues of A/c in (0, 1], i.e. for any SPD A.
``method="denman-beavers"`` uses the inverse-based Denman–Beavers iteration
Y <- (Y + Z^{-1})/2, Z <- (Z + Y^{-1})/2 from the same start (quadratic from the first step, at
the cost of two inverses per step).

``inv_root``: the coupled Newton iteration for A^{-1/p} (Guo & Higham, "A Schur–Newton method
for the matrix p-th root and its inverse", 2006), as used by Shampoo: with z = (1 + p)/(2||A||_F),
X_0 = z^{1/p} I, M_0 = z A,

    T_k = ((p + 1) I - M_k) / p,     X_{k+1} = X_k T_k,     M_{k+1} = T_k^p M_k,

which keeps M_k = X_k^p A, so M_k -> I gives X_k -> A^{-1/p}; it converges for eigenvalues of
M_0 in (0, p + 1).

All functions are batched over leading dimensions and stop when the iteration's own residual
reaches ``tol``. A singular (PSD) input cannot converge: the iteration stops at the step cap or
at the last finite iterate and returns a large but finite result. Symmetry is assumed, not
checked.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from .backward import inv_sqrtm_backward, sqrtm_backward
from .iteration import iterate_to_tolerance
from .norms import frobenius_norm
from .validate import check_matrix, check_method, default_max_steps, default_tol

SQRT_METHODS = ("newton-schulz", "denman-beavers")

Pair = tuple[torch.Tensor, torch.Tensor]


def sqrtm(A: torch.Tensor, *, method: str = "newton-schulz", tol: float | None = None,
          max_steps: int | None = None) -> torch.Tensor:
    """The principal square root A^{1/2} of a symmetric positive (semi)definite A (..., n, n).

    Differentiable: the backward pass solves S Y + Y S = dL/dS by a matrix-sign iteration.

    Example:
        >>> A = torch.tensor([[4.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
        >>> torch.allclose(sqrtm(A), torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64)))
        True
    """
    compute = _coupled_root(A, "A", method, tol, max_steps, inverse=False)
    return _Sqrtm.apply(A, compute)


def inv_sqrtm(A: torch.Tensor, *, method: str = "newton-schulz", tol: float | None = None,
              max_steps: int | None = None) -> torch.Tensor:
    """The inverse principal square root A^{-1/2} of a symmetric positive definite A (..., n, n).

    Differentiable: dZ = -Z dS Z with S dS + dS S = dA, solved by a matrix-sign iteration.

    Example:
        >>> A = torch.tensor([[4.0, 0.0], [0.0, 0.25]], dtype=torch.float64)
        >>> inv_sqrtm(A)
        tensor([[0.5000, 0.0000],
                [0.0000, 2.0000]], dtype=torch.float64)
    """
    compute = _coupled_root(A, "A", method, tol, max_steps, inverse=True)
    return _InvSqrtm.apply(A, compute)


def inv_root(A: torch.Tensor, p: int, *, tol: float | None = None, max_steps: int | None = None) -> torch.Tensor:
    """A^{-1/p} for symmetric positive definite A (..., n, n) and a positive integer p.

    Gradients, if needed, flow by unrolling the iteration.

    Example:
        >>> A = torch.diag(torch.tensor([16.0, 1.0], dtype=torch.float64))
        >>> inv_root(A, 4).diagonal()
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    check_matrix(A, "A", square=True)
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be a positive int, got {p!r}")
    tol, max_steps = _tolerances(A, tol, max_steps)
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    norm = frobenius_norm(A).clamp_min(torch.finfo(A.dtype).tiny)
    z = (1 + p) / (2 * norm)
    X0 = z ** (1.0 / p) * eye
    M0 = z * A

    def step(state: Pair, k: int) -> tuple[Pair, torch.Tensor]:
        X, M = state
        T = ((p + 1) * eye - M) / p
        M_new = torch.linalg.matrix_power(T, p) @ M
        return (X @ T, M_new), torch.linalg.matrix_norm(M_new - eye) / n**0.5

    (X, _), _ = iterate_to_tolerance(step, (X0, M0), tol=tol, max_steps=max_steps)
    return X


def _coupled_root(A: torch.Tensor, name: str, method: str, tol: float | None,
                  max_steps: int | None, *, inverse: bool) -> Callable[[torch.Tensor], Pair]:
    """Validate, and return the function computing (A^{1/2}, A^{-1/2}) with the chosen method.

    The iteration stops on the convergence of the factor asked for (``inverse`` selects A^{-1/2}):
    for a singular A the inverse factor grows without bound and must not keep the square root
    iterating, where its growth would leak into Y through the product Z Y.
    """
    check_matrix(A, name, square=True)
    check_method(method, SQRT_METHODS)
    if method == "denman-beavers" and torch.finfo(A.dtype).bits < 32:
        raise TypeError(f"method 'denman-beavers' needs matrix inverses, which {A.dtype} lacks; "
                        "use method='newton-schulz'")
    tol, max_steps = _tolerances(A, tol, max_steps)
    return lambda A: _sqrt_pair(A, method, tol, max_steps, inverse)


def _sqrt_pair(A: torch.Tensor, method: str, tol: float, max_steps: int, inverse: bool) -> Pair:
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    c = frobenius_norm(A).clamp_min(torch.finfo(A.dtype).tiny)
    tiny = torch.finfo(A.dtype).tiny

    def step(state: Pair, k: int) -> tuple[Pair, torch.Tensor]:
        Y, Z = state
        if method == "newton-schulz":
            T = 1.5 * eye - 0.5 * (Z @ Y)
            Y_new, Z_new = Y @ T, T @ Z
        else:
            Y_new, Z_new = 0.5 * (Y + torch.linalg.inv(Z)), 0.5 * (Z + torch.linalg.inv(Y))
        tracked, previous = (Z_new, Z) if inverse else (Y_new, Y)
        change = torch.linalg.matrix_norm(tracked - previous) / torch.linalg.matrix_norm(tracked).clamp_min(tiny)
        return (Y_new, Z_new), change

    (Y, Z), _ = iterate_to_tolerance(step, (A / c, eye.expand_as(A)), tol=tol, max_steps=max_steps)
    return Y * c.sqrt(), Z / c.sqrt()


def _tolerances(A: torch.Tensor, tol: float | None, max_steps: int | None) -> tuple[float, int]:
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    return (default_tol(A.dtype) if tol is None else tol,
            default_max_steps(A.dtype) if max_steps is None else max_steps)


class _Sqrtm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor, compute: Callable[[torch.Tensor], Pair]) -> torch.Tensor:
        S, _ = compute(A)
        ctx.save_for_backward(S)
        return S

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (S,) = ctx.saved_tensors
        return sqrtm_backward(S, grad), None


class _InvSqrtm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor, compute: Callable[[torch.Tensor], Pair]) -> torch.Tensor:
        S, Z = compute(A)
        ctx.save_for_backward(S, Z)
        return Z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        S, Z = ctx.saved_tensors
        return inv_sqrtm_backward(S, Z, grad), None
