"""Lanczos with full reorthogonalization: one expansion loop for the eigenvalue solver and for
stochastic Lanczos quadrature, over P independent start vectors at once.

For a symmetric A and unit q₁, m steps build an orthonormal Q = [q₁ … q_m] of the Krylov space
K_m(A, q₁) and the projection H = QᵀAQ, tridiagonal (α on the diagonal, β beside it) in exact
arithmetic. Each new vector is orthogonalized against all previous ones, twice, and the full
column of coefficients is kept, so H stays exact also when the basis begins with vectors that are
not a Krylov sequence — the kept Ritz vectors of a thick restart (Wu & Simon 2000), for which H is
an arrowhead plus a tridiagonal. When a Krylov space is exhausted (β at round-off level, an
invariant subspace) the process continues either with zero vectors (quadrature: a zero block of T,
which carries no weight) or with a random vector orthogonal to the basis (eigenvalues: multiple
and zero eigenvalues are found as well).

Gauss quadrature follows: with T = S Θ Sᵀ, q₁ᵀ g(A) q₁ ≈ Σ_j S₁ⱼ² g(θ_j), exact for polynomials
of degree < 2m (Golub & Meurant, "Matrices, Moments and Quadrature with Applications", 2010).

Example:
    >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    >>> nodes, weights = lanczos_quadrature(A, torch.ones(1, 10, dtype=torch.float64), steps=10)
    >>> (weights * nodes).sum()   # q₁ᵀAq₁ = mean of the diagonal
    tensor(5.5000, dtype=torch.float64)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.validate import check_positive
from ..linear.operator import LinearOperator
from .blocks import apply_block, as_square_operator, random_vectors


@dataclass
class LanczosBasis:
    """P bases of at most ``capacity`` vectors: ``vectors`` (P, capacity, n), of which the first
    ``size`` are filled and orthonormal; ``projected`` (P, capacity, capacity) holds QᵀAQ on them;
    ``coupling`` (P, capacity) the norm β of the residual left after each step (0 at breakdown);
    ``next`` (P, n) the unit vector the next step adds (zero where a process stopped); ``scale``
    (P,) the largest entry of the projection and coupling seen, the reference for breakdowns."""

    vectors: torch.Tensor
    projected: torch.Tensor
    coupling: torch.Tensor
    next: torch.Tensor
    scale: torch.Tensor
    size: int = 0
    products: int = 0

    @classmethod
    def start(cls, op: LinearOperator, start: torch.Tensor, capacity: int) -> "LanczosBasis":
        probes, n = start.shape
        options = {"dtype": op.dtype, "device": op.device}
        return cls(vectors=torch.zeros(probes, capacity, n, **options),
                   projected=torch.zeros(probes, capacity, capacity, **options),
                   coupling=torch.zeros(probes, capacity, **options),
                   next=start / start.norm(dim=-1, keepdim=True),
                   scale=torch.zeros(probes, **options))

    @property
    def residual(self) -> torch.Tensor:
        """β of the last step (P,): ‖Aq − Q h‖ for the last added q; 0 when the space is invariant."""
        return self.coupling[:, self.size - 1]

    def restart(self, rotation: torch.Tensor, values: torch.Tensor) -> None:
        """Keep the combinations ``rotation`` (P, size, k) of the basis, whose projection is
        diag(``values``) (P, k) — Ritz vectors; ``next`` still continues the last Krylov step."""
        k = rotation.shape[-1]
        self.vectors[:, :k] = torch.einsum("pjk,pjn->pkn", rotation, self.vectors[:, : self.size])
        self.projected.zero_()
        self.projected[:, :k, :k] = torch.diag_embed(values)
        self.size = k


def lanczos_expand(op: LinearOperator, basis: LanczosBasis, until: int, *,
                   generator: torch.Generator | None = None, restart_random: bool = False) -> LanczosBasis:
    """Add Lanczos steps to ``basis`` until it holds ``until`` vectors (or spans the space).

    Each step: q = ``basis.next``; w = Aq; h = Qᵀw with Q the basis and q (twice, full
    reorthogonalization); the column h enters ``projected``; w − Qh normalized is the next
    vector. A breakdown (‖w − Qh‖ ≤ 10·eps·√n times the largest entry seen) ends that process with
    zero vectors, or, with ``restart_random``, continues from a Gaussian vector (from
    ``generator``) orthogonal to the basis, with zero coupling.
    """
    probes, capacity, n = basis.vectors.shape
    if until > capacity:
        raise ValueError(f"until must be at most the basis capacity {capacity}, got {until}")
    threshold = 10 * torch.finfo(op.dtype).eps * n**0.5
    while basis.size < until:
        j = basis.size
        q = basis.next
        basis.vectors[:, j] = q
        w = apply_block(op, q)
        basis.products += 1
        previous = basis.vectors[:, : j + 1]
        h = torch.zeros(probes, j + 1, dtype=op.dtype, device=op.device)
        for _ in range(2):
            correction = torch.einsum("pkn,pn->pk", previous, w)
            w = w - torch.einsum("pkn,pk->pn", previous, correction)
            h = h + correction
        basis.projected[:, : j + 1, j] = h
        basis.projected[:, j, : j + 1] = h
        beta = w.norm(dim=-1)
        basis.scale = torch.maximum(basis.scale, torch.maximum(h.abs().amax(-1), beta))
        basis.size = j + 1
        if basis.size == n:  # the basis spans the whole space: its projection is exact
            basis.coupling[:, j] = 0
            basis.next = torch.zeros_like(q)
            break
        alive = beta > threshold * basis.scale
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        basis.coupling[:, j] = beta
        stopped = torch.zeros_like(w)
        if restart_random and not bool(alive.all()):
            stopped = _orthogonal_random(basis.vectors[:, : j + 1], op, generator)
        basis.next = torch.where(alive.unsqueeze(-1), w / torch.where(alive, beta, 1.0).unsqueeze(-1), stopped)
    return basis


def _orthogonal_random(vectors: torch.Tensor, op: LinearOperator, generator: torch.Generator | None) -> torch.Tensor:
    """A unit Gaussian vector orthogonal to each basis (P, j, n), one per process (P, n)."""
    r = random_vectors(vectors.shape[0], op, generator, "gaussian")
    for _ in range(2):
        r = r - torch.einsum("pkn,pk->pn", vectors, torch.einsum("pkn,pn->pk", vectors, r))
    return r / r.norm(dim=-1, keepdim=True)


def lanczos_tridiagonal(op: Any, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """α (P, m) and β (P, m−1) of m = min(steps, n) Lanczos steps from each row of ``start`` (P, n).

    A start vector whose Krylov space is exhausted early (an invariant subspace, β ≈ 0) continues
    with zero vectors: its T is block diagonal with a zero block, which carries no quadrature weight.
    """
    op = as_square_operator(op)
    check_positive(steps, "steps", integer=True)
    if start.dim() != 2 or start.shape[1] != op.shape[-1]:
        raise ValueError(f"start must have shape (P, {op.shape[-1]}), got {tuple(start.shape)}")
    steps = min(steps, op.shape[-1])
    basis = lanczos_expand(op, LanczosBasis.start(op, start, steps), steps)
    return torch.diagonal(basis.projected, dim1=-2, dim2=-1), basis.coupling[:, :-1]


def lanczos_quadrature(op: Any, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature nodes θ (P, m) and weights S₁ⱼ² (P, m) of each start vector's
    spectral measure: q₁ᵀ g(A) q₁ ≈ Σ_j weights_j g(nodes_j), weights summing to 1."""
    alpha, beta = lanczos_tridiagonal(op, start, steps)
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    return nodes, vectors[:, 0, :] ** 2
