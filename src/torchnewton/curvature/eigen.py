"""Extreme eigenvalues of a symmetric operator by thick-restart Lanczos.

Lanczos with full reorthogonalization (``lanczos.lanczos_expand``, the loop stochastic Lanczos
quadrature uses too) builds an orthonormal basis Q (j, n) of a Krylov space and the projection
H = QᵀAQ (j, j); the Ritz pairs (θ, y = Qᵀs) of H approximate eigenpairs of A,
with residual ‖Ay − θy‖ = β |s_j| from the last coupling β. When the basis reaches
``krylov_dim`` vectors without convergence, the wanted Ritz vectors are kept and the space is
rebuilt from them — thick restart (Wu & Simon 2000, "Thick-restart Lanczos method for large
symmetric eigenvalue problems"), mathematically the implicitly restarted Lanczos of ARPACK.
An exhausted Krylov space (β ≈ 0, e.g. a low-rank Gauss–Newton matrix) continues from a random
vector orthogonal to the basis, so multiple and zero eigenvalues are found as well.

Example:
    >>> A = torch.diag(torch.arange(100.0, dtype=torch.float64))
    >>> eigenvalues(A, k=3).eigenvalues
    tensor([99.0000, 98.0000, 97.0000], dtype=torch.float64)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.status import Status
from ..core.validate import check_method, check_positive
from .blocks import as_square_operator, random_vectors
from .lanczos import LanczosBasis, lanczos_expand


@dataclass
class EigenResult:
    """``eigenvalues`` (k,) — descending for 'largest' and 'magnitude' (by |λ|), ascending for
    'smallest'; ``eigenvectors`` (k, n) orthonormal rows; ``residual_norms`` ‖Ay − θy‖ (k,);
    ``converged`` (k,) bool; ``num_products`` the products with A; ``status`` SUCCESS or MAX_ITER."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residual_norms: torch.Tensor
    converged: torch.Tensor
    num_products: int
    status: Status

    @property
    def success(self) -> bool:
        return self.status == Status.SUCCESS


def _wanted(theta: torch.Tensor, which: str) -> torch.Tensor:
    """Indices of the Ritz values, most wanted first."""
    if which == "largest":
        return torch.argsort(theta, descending=True)
    if which == "smallest":
        return torch.argsort(theta)
    return torch.argsort(theta.abs(), descending=True)


def eigenvalues(op: Any, k: int = 5, which: str = "largest", *, tol: float | None = None,
                krylov_dim: int | None = None, max_products: int | None = None,
                generator: torch.Generator | None = None) -> EigenResult:
    """The k eigenvalues of a symmetric operator at one end of its spectrum.

    ``which`` is 'largest' (algebraic), 'smallest' or 'magnitude' (largest |λ|). A pair counts as
    converged when its residual ‖Ay − θy‖ ≤ tol·max|θ| (default tol √eps of the dtype; the
    eigenvalue error is then about tol²·‖A‖²/gap). ``krylov_dim`` (default max(2k + 10, 20), at
    most n) bounds the basis kept in memory, (krylov_dim, n); ``max_products`` (default
    50·krylov_dim) bounds the work. The start vector is Gaussian from ``generator``.
    """
    op = as_square_operator(op)
    n = op.shape[-1]
    check_positive(k, "k", integer=True)
    if k > n:
        raise ValueError(f"k must be at most the operator's size n = {n}, got {k}")
    which = check_method(which, ("largest", "smallest", "magnitude"), "which")
    dim = krylov_dim if krylov_dim is not None else min(n, max(2 * k + 10, 20))
    check_positive(dim, "krylov_dim", integer=True)
    if dim > n or (dim <= k and dim < n):
        raise ValueError(f"krylov_dim must lie in ({k}, {n}] (or equal n), got {dim}")
    tol = tol if tol is not None else float(torch.finfo(op.dtype).eps) ** 0.5
    check_positive(tol, "tol")
    max_products = max_products if max_products is not None else 50 * dim
    check_positive(max_products, "max_products", integer=True)

    basis = LanczosBasis.start(op, random_vectors(1, op, generator, "gaussian"), dim)
    while True:
        lanczos_expand(op, basis, dim, generator=generator, restart_random=True)
        j = basis.size
        theta, vectors = torch.linalg.eigh(basis.projected[0, :j, :j])
        order = _wanted(theta, which)
        residuals = basis.residual[0] * vectors[j - 1].abs()
        norm = max(float(theta.abs().max()), torch.finfo(op.dtype).tiny)
        wanted = order[:k]
        converged = residuals[wanted] <= tol * norm
        if bool(converged.all()) or basis.products >= max_products or j == n:
            break
        keep = order[: min(dim - 1, k + (dim - k) // 2)]
        basis.restart(vectors[:, keep].unsqueeze(0), theta[keep].unsqueeze(0))
    return EigenResult(eigenvalues=theta[wanted], eigenvectors=vectors[:, wanted].T @ basis.vectors[0, :j],
                       residual_norms=residuals[wanted], converged=converged, num_products=basis.products,
                       status=Status.SUCCESS if bool(converged.all()) else Status.MAX_ITER)
