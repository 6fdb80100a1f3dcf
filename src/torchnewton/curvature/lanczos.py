"""Lanczos tridiagonalization with full reorthogonalization, for several start vectors at once.

For a symmetric A and unit q₁, m steps build an orthonormal Q = [q₁ … q_m] of the Krylov space
K_m(A, q₁) with QᵀAQ = T tridiagonal (α on the diagonal, β beside it). Gauss quadrature follows:
with T = S Θ Sᵀ, q₁ᵀ g(A) q₁ ≈ Σ_j S₁ⱼ² g(θ_j), exact for polynomials of degree < 2m (Golub &
Meurant, "Matrices, Moments and Quadrature with Applications", 2010). Every new vector is
orthogonalized against all previous ones, twice, so the nodes do not repeat spuriously.

Example:
    >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    >>> nodes, weights = lanczos_quadrature(A, torch.ones(1, 10, dtype=torch.float64), steps=10)
    >>> (weights * nodes).sum()   # q₁ᵀAq₁ = mean of the diagonal
    tensor(5.5000, dtype=torch.float64)
"""
from __future__ import annotations

from typing import Any

import torch

from ..core.validate import check_positive
from .blocks import apply_block, as_square_operator


def lanczos_tridiagonal(op: Any, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """α (P, m) and β (P, m−1) of m Lanczos steps from each row of ``start`` (P, n).

    A start vector whose Krylov space is exhausted early (an invariant subspace, β ≈ 0) continues
    with zero vectors: its T is block diagonal with a zero block, which carries no quadrature weight.
    """
    op = as_square_operator(op)
    check_positive(steps, "steps", integer=True)
    probes, n = start.shape
    if n != op.shape[-1]:
        raise ValueError(f"start must have shape (P, {op.shape[-1]}), got {tuple(start.shape)}")
    steps = min(steps, n)
    basis = torch.zeros(probes, steps, n, dtype=op.dtype, device=op.device)
    alpha = torch.zeros(probes, steps, dtype=op.dtype, device=op.device)
    beta = torch.zeros(probes, steps, dtype=op.dtype, device=op.device)
    q = start / start.norm(dim=-1, keepdim=True)
    scale = torch.zeros(probes, dtype=op.dtype, device=op.device)
    # an invariant subspace shows as β at round-off level relative to ‖T‖
    threshold = 10 * torch.finfo(op.dtype).eps * n**0.5
    for j in range(steps):
        basis[:, j] = q
        w = apply_block(op, q)
        alpha[:, j] = (q * w).sum(-1)
        previous = basis[:, : j + 1]
        for _ in range(2):
            w = w - torch.einsum("pkn,pk->pn", previous, torch.einsum("pkn,pn->pk", previous, w))
        beta[:, j] = w.norm(dim=-1)
        scale = torch.maximum(scale, torch.maximum(alpha[:, j].abs(), beta[:, j]))
        alive = beta[:, j] > threshold * scale
        beta[:, j] = torch.where(alive, beta[:, j], torch.zeros_like(beta[:, j]))
        q = torch.where(alive.unsqueeze(-1), w / torch.where(alive, beta[:, j], 1.0).unsqueeze(-1),
                        torch.zeros_like(w))
    return alpha, beta[:, :-1]


def lanczos_quadrature(op: Any, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature nodes θ (P, m) and weights S₁ⱼ² (P, m) of each start vector's
    spectral measure: q₁ᵀ g(A) q₁ ≈ Σ_j weights_j g(nodes_j), weights summing to 1."""
    alpha, beta = lanczos_tridiagonal(op, start, steps)
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    return nodes, vectors[:, 0, :] ** 2
